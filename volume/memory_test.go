package volume

import "testing"

func TestDirtyLimitFor(t *testing.T) {
	for _, c := range []struct{ mem, want int64 }{
		{0, 256 << 20},         // unknown
		{512 << 20, 64 << 20},  // small: the floor
		{8 << 30, 512 << 20},   // 1/16
		{24 << 30, 1536 << 20}, // 1/16: a 1 GiB working set fits
		{256 << 30, 2 << 30},   // the cap
	} {
		if got := dirtyLimitFor(c.mem); got != c.want {
			t.Errorf("dirtyLimitFor(%d) = %d, want %d", c.mem, got, c.want)
		}
	}
}

func TestCgroupParsing(t *testing.T) {
	for _, c := range []struct {
		text, ctrl, want string
		ok               bool
	}{
		{"0::/system.slice/cairn.service\n", "", "/system.slice/cairn.service", true},
		{"12:memory:/docker/abc\n0::/docker/abc\n", "", "/docker/abc", true},
		{"0::/\n", "", "/", true},
		{"12:memory:/docker/abc\n", "", "", false}, // cgroup v1 only
		{"12:memory:/docker/abc\n", "memory", "/docker/abc", true},
		{"3:cpu,memory:/x\n", "memory", "/x", true},
		{"3:cpu:/x\n0::/y\n", "memory", "", false},
		{"", "", "", false},
		{"garbage", "", "", false},
	} {
		got, ok := cgroupPath(c.text, c.ctrl)
		if got != c.want || ok != c.ok {
			t.Errorf("cgroupPath(%q, %q) = %q, %v; want %q, %v", c.text, c.ctrl, got, ok, c.want, c.ok)
		}
	}
	for _, c := range []struct {
		text string
		want int64
	}{{"max\n", 0}, {"1073741824\n", 1 << 30}, {"9223372036854771712\n", 0}, {"", 0}, {"-1", 0}, {"junk", 0}} {
		if got := parseMemoryMax(c.text); got != c.want {
			t.Errorf("parseMemoryMax(%q) = %d, want %d", c.text, got, c.want)
		}
	}
}
