package jsonbody

// Relax returns b with the two liberties that hand-written JSON in shell
// examples takes removed: comments (`# …` and `// …` to the end of the line)
// and trailing commas before `}` or `]`. Bytes inside strings are never
// touched. It reports whether anything changed; the caller still validates
// the result, so Relax never turns invalid JSON into a guess.
//
// LiteLLM's documentation sends bodies such as `{"max_budget": 10,}` and
// `{"models": ["beta-models"], # 👈 Model Access Group` verbatim with curl;
// Tollgate accepts them so those examples work unchanged.
func Relax(b []byte) ([]byte, bool) {
	out := make([]byte, 0, len(b))
	changed := false
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out = append(out, c)
			switch c {
			case '\\':
				if i+1 < len(b) {
					i++
					out = append(out, b[i])
				}
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
			out = append(out, c)
		case c == '#' || (c == '/' && i+1 < len(b) && b[i+1] == '/'):
			for i < len(b) && b[i] != '\n' {
				i++
			}
			changed = true
			if i < len(b) {
				out = append(out, '\n')
			}
		case c == '}' || c == ']':
			j := len(out) - 1
			for j >= 0 && isSpace(out[j]) {
				j--
			}
			if j >= 0 && out[j] == ',' {
				out = append(out[:j], out[j+1:]...)
				changed = true
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	return out, changed
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
