package policies

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Byte-count units. Sizes are written with binary (IEC) units only.
const (
	B   Size = 1
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// Block size limits: a policy's BlockSize is a power of two in
// [MinBlockSize, MaxBlockSize].
const (
	MinBlockSize Size = 512
	MaxBlockSize Size = 4 * MiB
	// MinErasureBlockSize is the smallest block size that may be
	// erasure-coded: below it the pieces would be a few dozen bytes each,
	// dwarfed by their per-piece headers and checksums.
	MinErasureBlockSize Size = 4 * KiB
)

var units = []struct {
	name string
	size Size
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", B}}

// String writes s with the largest binary unit that divides it exactly:
// 4096 is "4KiB", 1536 is "1536B", 0 is "0B". Negative sizes are written
// in bytes ("-1B"). ParseSize reads every non-negative result back.
func (s Size) String() string {
	if s > 0 {
		for _, u := range units {
			if s%u.size == 0 {
				return strconv.FormatInt(int64(s/u.size), 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText implements encoding.TextMarshaler with [Size.String].
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with [ParseSize]. It
// does not check block-size limits; errors wrap [ErrInvalid].
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSize reads a byte count: a whole number, optionally followed (with or
// without a space) by one of the units B, KiB, MiB, GiB, TiB, spelled exactly
// so. "4KiB", "4 KiB", "4096" and "512B" are accepted. Decimal (SI) units
// such as "4KB" are refused, since 4KB would mean 4000 bytes; so are
// fractions, signs and sizes above 2^62 bytes. Errors wrap [ErrInvalid].
func ParseSize(text string) (Size, error) {
	v, problem := parseSize(text)
	if problem != "" {
		return 0, fmt.Errorf("%w: size %q %s", ErrInvalid, text, problem)
	}
	return v, nil
}

// parseSize returns the size, or a problem sentence that continues the
// quoted text ("4KB" + " uses ...") and says what to write instead.
func parseSize(text string) (Size, string) {
	s := strings.TrimSpace(text)
	if s == "" {
		return 0, `is empty; write a size such as "4KiB"`
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		if s[0] == '-' {
			return 0, `is negative; write a size such as "4KiB"`
		}
		return 0, `does not start with a number; write a size such as "4KiB"`
	}
	if strings.HasPrefix(unit, ".") || strings.HasPrefix(unit, ",") {
		return 0, `is not a whole number; write a whole number of bytes, KiB or MiB, such as "1536B" or "4KiB"`
	}
	example := func(u string) string { return fmt.Sprintf(`"%s%s"`, num, u) }
	var mult Size
	switch unit {
	case "", "B":
		mult = B
	case "KiB", "MiB", "GiB", "TiB":
		for _, u := range units {
			if u.name == unit {
				mult = u.size
			}
		}
	default:
		lower := strings.ToLower(unit)
		switch lower {
		case "kb", "mb", "gb", "tb":
			iec := strings.ToUpper(lower[:1]) + "iB"
			return 0, fmt.Sprintf("uses the decimal unit %s (powers of 1000); write %s (powers of 1024), e.g. %s",
				unit, iec, example(iec))
		case "k", "m", "g", "t":
			iec := strings.ToUpper(lower) + "iB"
			return 0, fmt.Sprintf("uses the unit %q, which is ambiguous; write %s, e.g. %s", unit, iec, example(iec))
		case "kib", "mib", "gib", "tib":
			iec := strings.ToUpper(lower[:1]) + "iB"
			return 0, fmt.Sprintf("spells the unit %q; write %s, e.g. %s", unit, iec, example(iec))
		case "b", "byte", "bytes":
			return 0, fmt.Sprintf("spells the unit %q; write B, e.g. %s", unit, example("B"))
		}
		return 0, fmt.Sprintf(`has the unknown unit %q; write B, KiB or MiB, e.g. "4KiB"`, unit)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/int64(mult) || n*int64(mult) > 1<<62 {
		return 0, `is too large; write a size such as "4KiB"`
	}
	return Size(n) * mult, ""
}

// isPowerOfTwo reports whether s is a positive power of two.
func isPowerOfTwo(s Size) bool { return s > 0 && s&(s-1) == 0 }
