package translate

import "errors"

// FieldError is a request a translation refuses, with the top-level member
// of the request that it refuses, so the client's 400 can name it.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// onField marks err (nil stays nil) as a refusal of field.
func onField(field string, err error) error {
	if err == nil {
		return nil
	}
	return &FieldError{Field: field, Err: err}
}

// FieldOf is the request member err refuses, or fallback when it names none.
func FieldOf(err error, fallback string) string {
	if fe := (*FieldError)(nil); errors.As(err, &fe) {
		return fe.Field
	}
	return fallback
}
