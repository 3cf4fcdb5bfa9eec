package jsonbody

import "encoding/binary"

// maxDepth is encoding/json's bound on nesting: a value whose arrays and
// objects nest deeper is not valid.
const maxDepth = 10000

// Valid reports whether b is one JSON value, exactly as json.Valid does:
// the same grammar (RFC 8259: whitespace is space, tab, CR and LF; numbers
// without leading zeros, a fraction or an exponent each needing a digit;
// strings with no control byte and only the eight escapes and \u with four
// hex digits), bytes of 0x80 and above taken as they are (UTF-8 is not
// checked), and at most maxDepth levels of arrays and objects, empty ones
// included. It is one loop over the bytes where encoding/json's scanner
// makes an indirect call per byte: every whole answer and request body is
// checked with it (TestValidMatchesEncodingJSON, FuzzValid).
func Valid(b []byte) bool {
	_, ok := valid(b, nil)
	return ok
}

// span is one top-level member of an object as valid records it: the
// offsets of its key's opening quote, just past its key's closing quote,
// of its value's first byte and just past its value.
type span struct{ key, keyEnd, val, end int }

// valid is Valid, and when tops is not nil and b is an object it records
// b's top-level members in order as it checks them, the first len(tops)
// in tops; n counts them all (n > len(tops): the rest were not recorded).
// With tops nil it does what Valid did before it recorded anything; the
// recording only reads offsets the check has reached (TestValidRecords,
// FuzzValidRecords hold its spans to the walk Reset and Cursor made).
func valid(b []byte, tops []span) (n int, ok bool) {
	var buf [64]byte
	stack := buf[:0] // the open containers, '{' or '['
	rec := tops != nil
	i := 0
	for {
		// A value starts at i.
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, false
		}
		switch c := b[i]; c {
		case '{', '[':
			if len(stack) == maxDepth {
				return 0, false
			}
			stack = append(stack, c)
			i = skipSpace(b, i+1)
			if i >= len(b) {
				return 0, false
			}
			if b[i] == c+2 { // '}' or ']': empty
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '{' {
				k := i
				if i = validKey(b, i); i < 0 {
					return 0, false
				}
				if rec && len(stack) == 1 {
					n = record(tops, n, b, k, i)
				}
			}
			continue
		case '"':
			i = validString(b, i)
		case 't':
			i = validLiteral(b, i, "true")
		case 'f':
			i = validLiteral(b, i, "false")
		case 'n':
			i = validLiteral(b, i, "null")
		default:
			i = validNumber(b, i)
		}
		if i < 0 {
			return 0, false
		}
		// A value ended at i: close what it ends, or go on to the next.
		for {
			if rec && len(stack) == 1 && stack[0] == '{' && n <= len(tops) {
				tops[n-1].end = i // a top-level member's value
			}
			i = skipSpace(b, i)
			if len(stack) == 0 {
				if i != len(b) {
					return 0, false
				}
				return n, true
			}
			if i >= len(b) {
				return 0, false
			}
			top := stack[len(stack)-1]
			if b[i] == top+2 {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if b[i] != ',' {
				return 0, false
			}
			i = skipSpace(b, i+1)
			if top == '{' {
				k := i
				if i = validKey(b, i); i < 0 {
					return 0, false
				}
				if rec && len(stack) == 1 {
					n = record(tops, n, b, k, i)
				}
			}
			break
		}
	}
}

// record notes the top-level member whose key's quote is at k and whose
// colon ends at next (validKey's offsets) as tops[n] when there is room,
// and returns n+1.
func record(tops []span, n int, b []byte, k, next int) int {
	if n < len(tops) {
		j := next - 2 // before the colon: whitespace, then the key's closing quote
		for b[j] != '"' {
			j--
		}
		tops[n] = span{key: k, keyEnd: j + 1, val: skipSpace(b, next)}
	}
	return n + 1
}

// validKey checks a member's key and its colon at i (after whitespace) and
// returns the offset after the colon, or -1.
func validKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = validString(b, i); i < 0 {
		return -1
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return -1
	}
	return i + 1
}

// validString checks the string whose opening quote is at i and returns
// the offset after its closing quote, or -1.
func validString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			i++
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return -1
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return -1
					}
				}
				i += 4
			default:
				return -1
			}
		case c < 0x20:
			return -1
		}
	}
	return -1
}

// plainByte marks the bytes a string holds as they are: all but the quote,
// the backslash and the control bytes.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// special8 reports whether any of the eight bytes in x is a quote, a
// backslash or a control byte (the classic tests for a zero byte and for a
// byte below n, on all eight at once; exact as a yes or no).
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return ((q-ones)&^q|(bs-ones)&^bs|(x-ones*0x20)&^x)&highs != 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validNumber checks the number starting at i and returns the offset after
// it, or -1. What follows it is the caller's to judge ("01" ends at the 1).
func validNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b) || !isDigit(b[i]):
		return -1
	case b[i] == '0':
		i++
	default:
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return -1
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i
}

// validLiteral checks that lit is written at i and returns the offset
// after it, or -1.
func validLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}
