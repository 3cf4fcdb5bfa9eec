package gateway

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"slices"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/provider"
)

// uploadLimit is the least body size the upload routes accept, whatever
// max_request_size_mb says: OpenAI takes audio and images of up to 25 MB,
// and the form around the file needs a little more.
const uploadLimit = 26 << 20

// maxFieldBytes bounds one text field of a form (a prompt is at most
// 32,000 characters of UTF-8).
const maxFieldBytes = 256 << 10

// maxParts bounds the parts of one form and maxPartHeaderBytes one part's
// headers: an upload is a file and a dozen fields, and every part costs a
// header map kept for each attempt, so a body of many tiny parts would
// cost the gateway many times its size.
const (
	maxParts           = 1000
	maxPartHeaderBytes = 8 << 10
)

// form is a multipart/form-data upload, parsed once and re-encoded for
// each attempt with the deployment's model.
type form struct {
	parts []formPart
	// boundary is the re-encoded body's: a fresh random one, so that a
	// model name can never collide with the client's.
	boundary string
}

// formPart is one part of a form: a text field, or a file kept byte for
// byte (its headers too: filename and content type).
type formPart struct {
	header textproto.MIMEHeader
	name   string
	file   bool
	data   []byte
}

// parseForm reads a multipart/form-data body. Parts are read raw: a
// Content-Transfer-Encoding is passed on, never decoded.
func parseForm(body []byte, contentType string) (*form, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, apierror.BadRequest("", "this endpoint takes a multipart/form-data body (Content-Type %q)", clip(contentType))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	f := &form{boundary: multipart.NewWriter(io.Discard).Boundary()}
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, apierror.BadRequest("", "malformed multipart body: %v", err)
		}
		if len(f.parts) == maxParts {
			return nil, apierror.BadRequest("", "malformed multipart body: more than %d parts", maxParts)
		}
		if headerBytes(p.Header) > maxPartHeaderBytes {
			return nil, apierror.BadRequest("", "malformed multipart body: a part's headers are over %d bytes", maxPartHeaderBytes)
		}
		part := formPart{header: p.Header, name: p.FormName(), file: p.FileName() != ""}
		if part.name == "" {
			return nil, apierror.BadRequest("", "malformed multipart body: a part has no form field name")
		}
		limit := int64(len(body))
		if !part.file {
			limit = maxFieldBytes
		}
		part.data, err = io.ReadAll(io.LimitReader(p, limit+1))
		if err != nil {
			return nil, apierror.BadRequest(part.name, "malformed multipart body: %v", err)
		}
		if int64(len(part.data)) > limit {
			return nil, apierror.BadRequest(part.name, "form field %s is over %d bytes", clip(part.name), maxFieldBytes)
		}
		f.parts = append(f.parts, part)
	}
	if len(f.parts) == 0 {
		return nil, apierror.BadRequest("", "malformed multipart body: no parts")
	}
	return f, nil
}

// headerBytes is the size of a part's headers, names and values.
func headerBytes(h textproto.MIMEHeader) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // ": " and CRLF
		}
	}
	return n
}

// pricingFields are the fields the gateway prices or routes a form by:
// each must be one text part, as a server that reads the last of
// duplicates (Starlette's) would otherwise get what was not held for.
var pricingFields = []string{"model", "n", "size", "quality", "response_format", "stream", "prompt", "user"}

// checkFields refuses a form whose pricing fields are repeated or sent
// as files, and (for audio) more than one file.
func (f *form) checkFields(op provider.Op) error {
	seen := map[string]bool{}
	for _, p := range f.parts {
		switch {
		case slices.Contains(pricingFields, p.name):
			if p.file {
				return apierror.BadRequest(p.name, "%s must be a text field, not a file", p.name)
			}
		case p.name == "file" && isAudioIn(op):
		default:
			continue
		}
		if seen[p.name] {
			return apierror.BadRequest(p.name, "the form has more than one %s field", p.name)
		}
		seen[p.name] = true
	}
	return nil
}

// value is the text field name's value, and whether the form has it.
func (f *form) value(name string) (string, bool) {
	for _, p := range f.parts {
		if p.name == name && !p.file {
			return string(p.data), true
		}
	}
	return "", false
}

// file is the first file part named one of names.
func (f *form) file(names ...string) (formPart, bool) {
	for _, p := range f.parts {
		for _, n := range names {
			if p.file && p.name == n {
				return p, true
			}
		}
	}
	return formPart{}, false
}

// files counts the file parts named one of names.
func (f *form) files(names ...string) int64 {
	var n int64
	for _, p := range f.parts {
		if p.file && slices.Contains(names, p.name) {
			n++
		}
	}
	return n
}

// contentType is the re-encoded body's Content-Type.
func (f *form) contentType() string {
	return "multipart/form-data; boundary=" + f.boundary
}

// encode is the form with its model field set to model (added first when
// the client put the model in the path), every other part as it came.
func (f *form) encode(model string) []byte {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	_ = w.SetBoundary(f.boundary) // valid: made by multipart.Writer
	if _, ok := f.value("model"); !ok {
		_ = w.WriteField("model", model)
	}
	for _, p := range f.parts {
		data := p.data
		if p.name == "model" && !p.file {
			data = []byte(model)
		}
		pw, _ := w.CreatePart(p.header) // writes to memory: cannot fail
		_, _ = pw.Write(data)
	}
	_ = w.Close()
	return b.Bytes()
}
