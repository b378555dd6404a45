package policies

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Problem is one thing wrong with a policy. Parse, Load, Validate and Check
// return every Problem they find at once, joined with errors.Join (so the
// joined error prints one problem per line); errors.As finds the first one
// and errors.Is(err, ErrInvalid) holds for each.
type Problem struct {
	// File is the file name given to Parse or Load; "" for policies built
	// in code (Validate) and for cluster checks (Check).
	File string
	// Line is the 1-based line of the offending key; 0 when the problem
	// belongs to no single line (a default taken from the file name, a
	// cluster fact).
	Line int
	// Msg says what is wrong and what to write instead, e.g.
	// `block_size "3KiB" is not a power of two; write a power of two from
	// 512B to 4MiB, e.g. "4KiB"`.
	Msg string
}

// Error renders "file:line: msg", "file: msg" when there is no line, and
// "policies: msg" when there is no file.
func (p *Problem) Error() string {
	switch {
	case p.File == "":
		return "policies: " + p.Msg
	case p.Line <= 0:
		return p.File + ": " + p.Msg
	default:
		return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Msg
	}
}

// Unwrap returns ErrInvalid.
func (p *Problem) Unwrap() error { return ErrInvalid }

// joinProblems sorts ps by line (stably) and joins them; nil when empty.
func joinProblems(file string, ps []Problem) error {
	if len(ps) == 0 {
		return nil
	}
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(ps))
	for i := range ps {
		ps[i].File = file
		ps[i].Msg = oneLine(ps[i].Msg)
		errs[i] = &ps[i]
	}
	return errors.Join(errs...)
}

// oneLine escapes control characters (newlines from quoted input, say), so
// that each problem stays on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}
