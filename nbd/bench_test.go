package nbd

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"cairn/nbd/proto"
)

// BenchmarkIO drives the server with the raw client over loopback: 4 KiB
// reads and writes at queue depth 1 and 16, with the inline fast path on
// and off. Compare ns/op across the variants (each op is one request).
func BenchmarkIO(b *testing.B) {
	for _, cmd := range []proto.Cmd{proto.CmdRead, proto.CmdWrite} {
		for _, depth := range []int{1, 16} {
			for _, inline := range []bool{false, true} {
				b.Run(fmt.Sprintf("%v/depth=%d/inline=%v", cmd, depth, inline), func(b *testing.B) {
					dispatchMode = 0
					if !inline {
						dispatchMode = 1
					}
					defer func() { dispatchMode = 0 }()
					benchIO(b, cmd, depth)
				})
			}
		}
	}
}

func benchIO(b *testing.B, cmd proto.Cmd, depth int) {
	exp, _ := testExports()
	_, addr := startServer(b, exp, func(s *Server) { s.Logger = nil })
	rc := connect(b, addr, "disk", true)
	const bs = 4096
	data := make([]byte, bs)
	lens := map[uint64]uint32{}
	b.SetBytes(bs)
	b.ResetTimer()
	send := func(i int) {
		r := proto.Request{Type: cmd, Offset: uint64(i%4096) * bs, Length: bs}
		if cmd == proto.CmdWrite {
			rc.send(r, data)
		} else {
			lens[rc.send(r, nil)] = bs
		}
	}
	sent := 0
	for ; sent < depth && sent < b.N; sent++ {
		send(sent)
	}
	for done := 0; done < b.N; done++ {
		r := rc.recv(lens)
		if r.errno != 0 {
			b.Fatal(r.errno)
		}
		delete(lens, r.cookie)
		if sent < b.N {
			send(sent)
			sent++
		}
	}
	b.StopTimer()
	rc.disc()
}

// TestFioIOPS measures 4 KiB random-read IOPS with fio's nbd engine, with
// the inline fast path on and off. Opt-in: NBD_FIO_BENCH=1.
func TestFioIOPS(t *testing.T) {
	if os.Getenv("NBD_FIO_BENCH") == "" {
		t.Skip("set NBD_FIO_BENCH=1 to measure")
	}
	fio := requireTool(t, "fio")
	for _, depth := range []string{"1", "16"} {
		for _, mode := range []int{0, 1, 2, 0, 1, 2} {
			dispatchMode = mode
			exp, _ := testExports()
			_, addr := startServer(t, exp, func(s *Server) { s.Logger = nil })
			out := run(t, fio, "--name=bench", "--ioengine=nbd", "--uri="+uri(addr, "disk"), "--rw=randread",
				"--bs=4k", "--size=16m", "--iodepth="+depth, "--time_based", "--runtime=3", "--output-format=json")
			var res struct {
				Jobs []struct {
					Read struct {
						IOPS float64 `json:"iops"`
					} `json:"read"`
				} `json:"jobs"`
			}
			if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil || len(res.Jobs) == 0 {
				t.Fatalf("fio: %v\n%s", err, out)
			}
			t.Logf("randread 4k iodepth=%s mode=%d: %.0f IOPS", depth, mode, res.Jobs[0].Read.IOPS)
		}
	}
	dispatchMode = 0
}
