package policies

import (
	"fmt"
	"strings"
)

// compressions, ciphers and spreads list the known values, in the order the
// error messages name them.
var (
	compressions = []Compression{CompressionNone, CompressionLZ4}
	ciphers      = []Cipher{CipherNone, CipherAES256, CipherXChaCha}
	spreads      = []Spread{SpreadNone, SpreadNode, SpreadZone}
)

// Valid reports whether c is a known codec.
func (c Compression) Valid() bool { return known(compressions, c) }

// Valid reports whether c is a known cipher.
func (c Cipher) Valid() bool { return known(ciphers, c) }

// Valid reports whether s is a known spread.
func (s Spread) Valid() bool { return known(spreads, s) }

// MarshalText implements encoding.TextMarshaler.
func (c Compression) MarshalText() ([]byte, error) { return []byte(c), nil }

// MarshalText implements encoding.TextMarshaler.
func (c Cipher) MarshalText() ([]byte, error) { return []byte(c), nil }

// MarshalText implements encoding.TextMarshaler.
func (s Spread) MarshalText() ([]byte, error) { return []byte(s), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts only the
// known codecs, spelled exactly. Errors wrap [ErrInvalid].
func (c *Compression) UnmarshalText(text []byte) error {
	return unmarshalEnum(c, compressions, "compression", text)
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts only the
// known ciphers, spelled exactly. Errors wrap [ErrInvalid].
func (c *Cipher) UnmarshalText(text []byte) error {
	return unmarshalEnum(c, ciphers, "cipher", text)
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts only the
// known spreads, spelled exactly. Errors wrap [ErrInvalid].
func (s *Spread) UnmarshalText(text []byte) error {
	return unmarshalEnum(s, spreads, "spread", text)
}

func known[T ~string](list []T, v T) bool {
	for _, k := range list {
		if k == v {
			return true
		}
	}
	return false
}

func unmarshalEnum[T ~string](dst *T, list []T, key string, text []byte) error {
	v := T(text)
	if !known(list, v) {
		return fmt.Errorf("%w: %s", ErrInvalid, enumProblem(key, list, string(text)))
	}
	*dst = v
	return nil
}

// enumProblem says that value is not one of list, and what to write.
func enumProblem[T ~string](key string, list []T, value string) string {
	for _, k := range list {
		if strings.EqualFold(string(k), strings.TrimSpace(value)) {
			return fmt.Sprintf("%s %q is not spelled as Cairn expects; write %s = %q", key, value, key, string(k))
		}
	}
	return fmt.Sprintf("%s %q is not known; write %s", key, value, orList(list))
}

// orList quotes the values and joins them: `"a", "b" or "c"`.
func orList[T ~string](list []T) string {
	q := make([]string, len(list))
	for i, v := range list {
		q[i] = fmt.Sprintf("%q", string(v))
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
