package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/memory"
	"cairn/internal/throttle"
)

var testSecret = []byte("cairn test cluster secret, 32 b.")

// testServer is a server over a memory store on 127.0.0.1:0.
type testServer struct {
	srv   *Server
	store Local
	addr  string
	done  chan error
}

func startServer(t testing.TB, store Local, addr string, mod ...func(*ServerOptions)) *testServer {
	t.Helper()
	if store == nil {
		store = memory.New(0)
	}
	opts := ServerOptions{Holder: store, Secret: testSecret, NodeID: "server"}
	for _, m := range mod {
		m(&opts)
	}
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	for i := 0; ; i++ { // the port of a server just shut down may linger
		l, err = net.Listen("tcp", addr)
		if err == nil || i == 100 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, store: store, addr: l.Addr().String(), done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(context.Background(), l) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-ts.done:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		ts.done <- ErrServerClosed // for a second stop
	case <-ctx.Done():
		t.Errorf("Serve did not return after Shutdown")
	}
}

func newClient(t testing.TB, addr string, mod ...func(*ClientOptions)) *Client {
	t.Helper()
	opts := ClientOptions{Secret: testSecret, NodeID: "client", Timeout: 30 * time.Second}
	for _, m := range mod {
		m(&opts)
	}
	c := NewClient(addr, opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	t.Run("Holder", func(t *testing.T) {
		blockstest.RunHolder(t, func(t testing.TB) blocks.Holder {
			return newClient(t, startServer(t, nil, "").addr)
		})
	})
	t.Run("Journal", func(t *testing.T) {
		blockstest.RunJournal(t, func(t testing.TB) blockstest.JournalHolder {
			return newClient(t, startServer(t, nil, "").addr)
		})
	})
	t.Run("TwoConns", func(t *testing.T) {
		blockstest.RunHolder(t, func(t testing.TB) blocks.Holder {
			return newClient(t, startServer(t, nil, "").addr, func(o *ClientOptions) { o.Conns = 2 })
		})
	})
}

func TestWrongSecret(t *testing.T) {
	ts := startServer(t, nil, "")
	ctx := testCtx(t)
	other := []byte("not the cluster secret, 32 bytes")
	_, err := Dial(ctx, ts.addr, ClientOptions{Secret: other, NodeID: "stranger"})
	if !errors.Is(err, ErrAuth) || !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("Dial with a wrong secret: %v, want ErrAuth and ErrUnavailable", err)
	}
	c := newClient(t, ts.addr, func(o *ClientOptions) { o.Secret = other })
	if _, err := c.GetPiece(ctx, blocks.Sum(nil)); !errors.Is(err, ErrAuth) {
		t.Fatalf("GetPiece with a wrong secret: %v, want ErrAuth", err)
	}
	if err := c.PutPiece(ctx, blocks.Sum([]byte("x")), []byte("x")); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("PutPiece with a wrong secret: %v, want ErrUnavailable", err)
	}
	// The server counted the refusals and served nothing.
	for i := 0; ts.srv.Stats().Refused < 2 && i < 1000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	st := ts.srv.Stats()
	if st.Refused < 2 || st.Requests != 0 {
		t.Fatalf("server stats %+v: want >= 2 refused, 0 requests", st)
	}
	if ok, _ := ts.store.HasPiece(ctx, blocks.Sum([]byte("x"))); ok {
		t.Fatal("a piece put without the secret is stored")
	}
	// A good client is served.
	good := newClient(t, ts.addr)
	if err := good.PutPiece(ctx, blocks.Sum([]byte("x")), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if st := ts.srv.Stats(); st.Requests != 1 {
		t.Fatalf("server stats %+v: want 1 request", st)
	}
}

// TestHandshake runs both sides of the handshake over a pipe with each
// combination of secrets, and a server that answers with a forged welcome.
func TestHandshake(t *testing.T) {
	other := []byte("not the cluster secret, 32 bytes")
	for _, tc := range []struct {
		name           string
		client, server []byte
		ok             bool
	}{
		{"same", testSecret, testSecret, true},
		{"client wrong", other, testSecret, false},
		{"server wrong", testSecret, other, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			type res struct {
				id  string
				err error
			}
			sc := make(chan res, 1)
			go func() {
				id, err := serverHandshake(b, b, tc.server, "srv")
				if err != nil {
					b.Close() // as the server does
				}
				sc <- res{id, err}
			}()
			sid, cerr := clientHandshake(a, a, tc.client, "cli")
			sr := <-sc
			if tc.ok {
				if cerr != nil || sr.err != nil || sid != "srv" || sr.id != "cli" {
					t.Fatalf("client %q %v, server %q %v", sid, cerr, sr.id, sr.err)
				}
				return
			}
			if !errors.Is(cerr, ErrAuth) || !errors.Is(sr.err, ErrAuth) {
				t.Fatalf("client: %v, server: %v; want ErrAuth on both", cerr, sr.err)
			}
		})
	}
	t.Run("forged welcome", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() {
			if _, err := readFrame(b, func(byte) int { return maxHandshake }); err != nil {
				return
			}
			b.Write(appendFrame(nil, opChallenge, 0, 0, challenge{nodeID: "liar"}.encode()))
			if _, err := readFrame(b, func(byte) int { return 64 }); err != nil {
				return
			}
			b.Write(appendFrame(nil, opWelcome, 0, 0, make([]byte, 32)))
		}()
		if _, err := clientHandshake(a, a, testSecret, "cli"); !errors.Is(err, ErrAuth) {
			t.Fatalf("client accepted a forged welcome: %v", err)
		}
	})
}

func TestRestart(t *testing.T) {
	store := memory.New(0)
	ts := startServer(t, store, "")
	addr := ts.addr
	const timeout = 2 * time.Second
	c := newClient(t, addr, func(o *ClientOptions) { o.Timeout = timeout })
	ctx := testCtx(t)
	k1, d1 := blocks.Sum([]byte("one")), []byte("one")
	if err := c.PutPiece(ctx, k1, d1); err != nil {
		t.Fatal(err)
	}
	ts.stop(t)
	// During the outage calls fail fast with ErrUnavailable; the test's
	// bound is loose (a busy machine), the point is that nothing hangs.
	for i := range 5 {
		start := time.Now()
		_, err := c.GetPiece(ctx, k1)
		if !errors.Is(err, blocks.ErrUnavailable) {
			t.Fatalf("GetPiece %d during the outage: %v, want ErrUnavailable", i, err)
		}
		if d := time.Since(start); d > 10*timeout {
			t.Fatalf("GetPiece during the outage took %v (timeout %v)", d, timeout)
		}
	}
	startServer(t, store, addr)
	var err error
	for i := 0; i < 200; i++ { // the dial backoff is at most a second
		var got []byte
		if got, err = c.GetPiece(ctx, k1); err == nil {
			if !bytes.Equal(got, d1) {
				t.Fatal("other bytes after the restart")
			}
			break
		}
		if !errors.Is(err, blocks.ErrUnavailable) {
			t.Fatalf("GetPiece after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the client never reconnected: %v", err)
	}
	k2 := blocks.Sum([]byte("two"))
	if err := c.PutPiece(ctx, k2, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRestartTransparent: after a restart, the first call on the old (now
// broken) connection is retried on a new one without an error.
func TestRestartTransparent(t *testing.T) {
	store := memory.New(0)
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	if err := c.PutPiece(ctx, blocks.Sum([]byte("a")), []byte("a")); err != nil {
		t.Fatal(err)
	}
	ts.stop(t)
	startServer(t, store, ts.addr)
	for i := 0; i < 100; i++ {
		_, err := c.GetPiece(ctx, blocks.Sum([]byte("a")))
		if err == nil {
			return
		}
		// Only a dial racing the restart may fail; then the backoff applies.
		if !errors.Is(err, blocks.ErrUnavailable) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no reconnection")
}

func TestConcurrent(t *testing.T) {
	ts := startServer(t, nil, "")
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	const workers = 64
	ops := 60
	if testing.Short() {
		ops = 20
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			log := blocks.NameID(fmt.Sprintf("log %d", w))
			for i := range ops {
				data := blockstest.Random(uint64(w*1000+i), 1+r.IntN(20000))
				key := blocks.Sum(data)
				if err := c.PutPiece(ctx, key, data); err != nil {
					errc <- err
					return
				}
				got, err := c.GetPiece(ctx, key)
				if err != nil || !bytes.Equal(got, data) {
					errc <- fmt.Errorf("worker %d: GetPiece: %v, equal %v", w, err, bytes.Equal(got, data))
					return
				}
				if err := c.Append(ctx, log, 1, uint64(i+1), data[:min(len(data), 100)]); err != nil {
					errc <- err
					return
				}
				switch r.IntN(4) {
				case 0:
					if err := c.DeletePiece(ctx, key); err != nil {
						errc <- err
						return
					}
					if ok, err := c.HasPiece(ctx, key); err != nil || ok {
						errc <- fmt.Errorf("HasPiece after delete: %v %v", ok, err)
						return
					}
				case 1:
					if err := c.Sync(ctx); err != nil {
						errc <- err
						return
					}
				}
			}
			n := 0
			if err := c.Replay(ctx, log, 1, func(_ blocks.Epoch, seq uint64, _ []byte) error {
				n++
				if seq != uint64(n) {
					return fmt.Errorf("replay: seq %d at %d", seq, n)
				}
				return nil
			}); err != nil || n != ops {
				errc <- fmt.Errorf("worker %d: replay: %v, %d records", w, err, n)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestStreams walks and replays more than a batch, stops them early, and
// checks the connection still serves afterwards.
func TestStreams(t *testing.T) {
	store := memory.New(0)
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	const nkeys = 3*batchTarget/32 + 17
	want := map[blocks.Addr]bool{}
	for i := range nkeys {
		k := blocks.Sum(fmt.Appendf(nil, "%d", i))
		if err := store.PutPiece(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	seen := map[blocks.Addr]bool{}
	if err := c.Walk(ctx, func(k blocks.Addr) error {
		if seen[k] || !want[k] {
			return fmt.Errorf("key %v twice or unknown", k)
		}
		seen[k] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != nkeys {
		t.Fatalf("Walk saw %d keys, want %d", len(seen), nkeys)
	}
	stop := errors.New("stop")
	n := 0
	if err := c.Walk(ctx, func(blocks.Addr) error {
		if n++; n == batchTarget/32+5 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || n != batchTarget/32+5 {
		t.Fatalf("Walk stopped in the 2nd batch: %v after %d", err, n)
	}

	log := blocks.NameID("big")
	rec := blockstest.Random(1, 100<<10)
	const nrec = 40 // 4 MB: several batches
	for seq := uint64(1); seq <= nrec; seq++ {
		if err := c.Append(ctx, log, 3, seq, rec); err != nil {
			t.Fatal(err)
		}
	}
	// A record of blocks.MaxRecord bytes goes in a batch of its own.
	big := blockstest.Random(2, blocks.MaxRecord)
	if err := c.Append(ctx, log, 3, nrec+1, big); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	if err := c.Replay(ctx, log, 2, func(e blocks.Epoch, seq uint64, r []byte) error {
		want := rec
		if seq == nrec+1 {
			want = big
		}
		if e != 3 || !bytes.Equal(r, want) {
			return fmt.Errorf("record %d: epoch %d, %d other bytes", seq, e, len(r))
		}
		seqs = append(seqs, seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != nrec || seqs[0] != 2 || seqs[len(seqs)-1] != nrec+1 {
		t.Fatalf("Replay from 2 gave seqs %v", seqs)
	}
	// Many stopped streams leave no stream behind on the server.
	for range 3 * maxStreams {
		if err := c.Walk(ctx, func(blocks.Addr) error { return stop }); !errors.Is(err, stop) {
			t.Fatal(err)
		}
	}
	if err := c.Walk(ctx, func(blocks.Addr) error { return nil }); err != nil {
		t.Fatalf("Walk after stopped walks: %v", err)
	}
}

// faultHolder wraps a memory store, failing calls with err, or blocking
// them until release is closed.
type faultHolder struct {
	*memory.Store
	err     error
	release chan struct{}
}

func (f *faultHolder) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, fmt.Errorf("fault: %w", f.err)
	}
	return f.Store.GetPiece(ctx, key)
}

func (f *faultHolder) Append(ctx context.Context, log blocks.ID, e blocks.Epoch, seq uint64, rec []byte) error {
	if f.err != nil {
		return fmt.Errorf("fault: %w", f.err)
	}
	return f.Store.Append(ctx, log, e, seq, rec)
}

func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want []error
	}{
		{blocks.ErrNotFound, []error{blocks.ErrNotFound}},
		{blocks.ErrCorrupt, []error{blocks.ErrCorrupt}},
		{blocks.ErrNoSpace, []error{blocks.ErrNoSpace}},
		{blocks.ErrFenced, []error{blocks.ErrFenced}},
		{blocks.ErrTooLarge, []error{blocks.ErrTooLarge}},
		{blocks.ErrClosed, []error{blocks.ErrUnavailable}},
		{blocks.ErrUnavailable, []error{blocks.ErrUnavailable}},
		{errors.New("disk on fire"), nil},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			ts := startServer(t, &faultHolder{Store: memory.New(0), err: tc.err}, "")
			c := newClient(t, ts.addr)
			ctx := testCtx(t)
			_, gerr := c.GetPiece(ctx, blocks.Sum(nil))
			aerr := c.Append(ctx, blocks.NameID("l"), 1, 1, []byte("r"))
			for _, err := range []error{gerr, aerr} {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tc.want {
					if !errors.Is(err, w) {
						t.Errorf("%v: not %v", err, w)
					}
				}
				for _, s := range []error{blocks.ErrNotFound, blocks.ErrCorrupt, blocks.ErrNoSpace, blocks.ErrFenced, blocks.ErrTooLarge, blocks.ErrUnavailable} {
					if errors.Is(err, s) && !errors.Is(tc.err, s) && !(tc.err == blocks.ErrClosed && s == blocks.ErrUnavailable) {
						t.Errorf("%v: is %v too", err, s)
					}
				}
			}
		})
	}
	t.Run("limits", func(t *testing.T) {
		ts := startServer(t, memory.New(1000), "")
		c := newClient(t, ts.addr)
		ctx := testCtx(t)
		if err := c.PutPiece(ctx, blocks.Sum(nil), make([]byte, 2000)); !errors.Is(err, blocks.ErrNoSpace) {
			t.Errorf("PutPiece over the store's space: %v, want ErrNoSpace", err)
		}
		if err := c.PutPiece(ctx, blocks.Sum(nil), make([]byte, blocks.MaxPiece+1)); !errors.Is(err, blocks.ErrTooLarge) {
			t.Errorf("PutPiece over MaxPiece: %v, want ErrTooLarge", err)
		}
		if err := c.Append(ctx, blocks.NameID("l"), 1, 1, make([]byte, blocks.MaxRecord+1)); !errors.Is(err, blocks.ErrTooLarge) {
			t.Errorf("Append over MaxRecord: %v, want ErrTooLarge", err)
		}
	})
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	fh := &faultHolder{Store: memory.New(0), release: release}
	ts := startServer(t, fh, "")
	defer close(release)
	c := newClient(t, ts.addr, func(o *ClientOptions) { o.Timeout = 300 * time.Millisecond })
	ctx := testCtx(t)
	if err := c.PutPiece(ctx, blocks.Sum(nil), nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetPiece(ctx, blocks.Sum(nil))
	if !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("GetPiece from a stuck holder: %v, want ErrUnavailable", err)
	}
	// The caller's own deadline gives the context's error instead.
	c2 := newClient(t, ts.addr)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c2.GetPiece(cctx, blocks.Sum(nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetPiece past the caller's deadline: %v", err)
	}
	// Other requests still work.
	if ok, err := c.HasPiece(ctx, blocks.Sum(nil)); err != nil || !ok {
		t.Fatalf("HasPiece after a timeout: %v %v", ok, err)
	}
}

func TestClose(t *testing.T) {
	ts := startServer(t, nil, "")
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Sync(ctx); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
}

// authConn returns a raw connection that passed the handshake.
func authConn(t testing.TB, addr string) (net.Conn, func(op byte) int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := clientHandshake(c, c, testSecret, "raw"); err != nil {
		t.Fatal(err)
	}
	return c, replyLimit
}

func TestHostile(t *testing.T) {
	ts := startServer(t, nil, "")
	ctx := testCtx(t)
	good := newClient(t, ts.addr)
	k := blocks.Sum([]byte("kept"))
	if err := good.PutPiece(ctx, k, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	huge := appendFrame(nil, opHello, 0, 0)
	huge[0], huge[1], huge[2], huge[3] = 0xff, 0xff, 0xff, 0xff
	badCRC := appendFrame(nil, opHello, 0, 0, hello{version: 1}.encode())
	badCRC[len(badCRC)-1] ^= 1
	preAuth := [][]byte{
		blockstest.Random(1, 1<<16),
		huge,
		badCRC,
		appendFrame(nil, opGetPiece, 0, 1, make([]byte, 32)), // a request before the handshake
		appendFrame(nil, opHello, 0, 0, []byte{1, 2, 3}),
		{},
	}
	for i, b := range preAuth {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if i == len(preAuth)-1 {
			c.Close() // nothing at all
			continue
		}
		// The server answers nothing useful and closes.
		f, err := readFrame(c, replyLimit)
		if err == nil && f.op != opChallenge && f.op != opRefused {
			t.Errorf("hostile %d: the server sent op %#x", i, f.op)
		}
		c.Close()
	}
	oversizedGet := appendFrame(nil, opGetPiece, 0, 1, make([]byte, 32))
	oversizedGet[0], oversizedGet[1] = 0x7f, 0xff
	badCRC2 := appendFrame(nil, opGetPiece, 0, 1, k[:])
	badCRC2[16] ^= 0xff
	reserved := appendFrame(nil, opGetPiece, 0, 1, k[:])
	reserved[6] = 1
	postAuth := [][]byte{
		blockstest.Random(2, 4096),
		oversizedGet,
		badCRC2,
		reserved,
		appendFrame(nil, opGetPiece, 0, 1, make([]byte, 31)),        // short key
		appendFrame(nil, opAppend, 0, 1, make([]byte, 40)),          // short header
		appendFrame(nil, opSeal, 0, 1, make([]byte, 41)),            // long
		appendFrame(nil, opReply, 0, 1, make([]byte, 65)),           // a reply op from a client, too long for an unknown op
		appendFrame(nil, opCredit, 0, 1, []byte{1}),                 // credit with a payload
		append(appendFrame(nil, opSync, 0, 1), 0, 0, 0, 0xff, 0x01), // a frame then a truncated one
	}
	for i, b := range postAuth {
		c, limit := authConn(t, ts.addr)
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
		for {
			if _, err := readFrame(c, limit); err != nil {
				break // closed by the server
			}
		}
		_ = i
	}
	// An unknown op is answered, not fatal.
	c, limit := authConn(t, ts.addr)
	c.Write(appendFrame(nil, 99, 0, 7, nil))
	f, err := readFrame(c, limit)
	if err != nil || f.id != 7 || f.status != codeBadRequest {
		t.Fatalf("unknown op: %+v %v", f, err)
	}
	c.Write(appendFrame(nil, opGetPiece, 0, 8, k[:]))
	if f, err := readFrame(c, limit); err != nil || f.id != 8 || string(f.payload) != "kept" {
		t.Fatalf("GetPiece after an unknown op: %+v %v", f, err)
	}
	// The good client is still served, on its old connection and a new one.
	if got, err := good.GetPiece(ctx, k); err != nil || string(got) != "kept" {
		t.Fatalf("good client after hostile bytes: %q %v", got, err)
	}
	fresh := newClient(t, ts.addr)
	if got, err := fresh.GetPiece(ctx, k); err != nil || string(got) != "kept" {
		t.Fatalf("new client after hostile bytes: %q %v", got, err)
	}
	st := ts.srv.Stats()
	if st.Malformed < int64(len(postAuth)-2) || st.Refused < int64(len(preAuth)-1) {
		t.Errorf("server stats %+v after %d hostile connections before and %d after the handshake", st, len(preAuth), len(postAuth))
	}
}

func TestServerOptions(t *testing.T) {
	if _, err := NewServer(ServerOptions{Holder: memory.New(0), Secret: []byte("short")}); err == nil {
		t.Error("a short secret was accepted")
	}
	if _, err := NewServer(ServerOptions{Secret: testSecret}); err == nil {
		t.Error("a server without a holder was accepted")
	}
	ctx := testCtx(t)
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.MaxConns = 1 })
	a := newClient(t, ts.addr)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b := newClient(t, ts.addr, func(o *ClientOptions) { o.Timeout = 5 * time.Second })
	if err := b.Sync(ctx); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("a connection over MaxConns: %v, want ErrUnavailable", err)
	}
}

// TestShutdownGraceful: a request in progress at Shutdown is answered.
func TestShutdownGraceful(t *testing.T) {
	release := make(chan struct{})
	fh := &faultHolder{Store: memory.New(0), release: release}
	ts := startServer(t, fh, "")
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	if err := fh.Store.PutPiece(ctx, blocks.Sum(nil), []byte("p")); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		p, err := c.GetPiece(ctx, blocks.Sum(nil))
		if err == nil && string(p) != "p" {
			err = fmt.Errorf("other bytes %q", p)
		}
		got <- err
	}()
	for i := 0; ts.srv.Stats().Requests == 0 && i < 3000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(ctx) }()
	time.Sleep(50 * time.Millisecond) // let Shutdown start (the outcome does not depend on it)
	close(release)
	if err := <-got; err != nil {
		t.Fatalf("GetPiece in progress at Shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := c.Sync(ctx); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("Sync after Shutdown: %v, want ErrUnavailable", err)
	}
}

// TestByteBudget: requests larger together than MaxInFlightBytes all run.
func TestByteBudget(t *testing.T) {
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.MaxInFlightBytes = 10 << 10 })
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			data := blockstest.Random(uint64(i), 8<<10+i)
			if err := c.PutPiece(ctx, blocks.Sum(data), data); err != nil {
				errc <- err
				return
			}
			if got, err := c.GetPiece(ctx, blocks.Sum(data)); err != nil || !bytes.Equal(got, data) {
				errc <- fmt.Errorf("GetPiece: %v", err)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestClientActivity checks that the server notes client activity for
// requests made with an ordinary context and not for background ones
// (throttle.Background), whose flag crosses the wire.
func TestClientActivity(t *testing.T) {
	var noted atomic.Int64
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.ClientActivity = func() { noted.Add(1) } })
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	bctx := throttle.Background(ctx)
	data := []byte("a piece")
	key := blocks.Sum(data)
	if err := c.PutPiece(bctx, key, data); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPiece(bctx, key); err != nil {
		t.Fatal(err)
	}
	if err := c.Walk(bctx, func(blocks.Addr) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(bctx); err != nil {
		t.Fatal(err)
	}
	if n := noted.Load(); n != 0 {
		t.Fatalf("background requests noted %d times as client activity, want 0", n)
	}
	if _, err := c.GetPiece(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := c.Append(ctx, blocks.NameID("log"), 1, 1, data); err != nil {
		t.Fatal(err)
	}
	if n := noted.Load(); n != 2 {
		t.Fatalf("client requests noted %d times, want 2", n)
	}
}

// refusing is a holder that refuses pieces whose first byte is 'x'.
type refusing struct{ *memory.Store }

func (r refusing) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if len(data) > 0 && data[0] == 'x' {
		return fmt.Errorf("test: %w", blocks.ErrNoSpace)
	}
	return r.Store.PutPiece(ctx, key, data)
}

// TestPutBatches checks that concurrent PutPiece calls travel in batches
// (fewer requests than pieces), that every piece lands, and that a
// piece's own error comes back to its caller only.
func TestPutBatches(t *testing.T) {
	store := refusing{memory.New(0)}
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	const workers, each = 32, 40
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				data := batchPiece(w, i)
				err := c.PutPiece(ctx, blocks.Sum(data), data)
				if (data[0] == 'x') != errors.Is(err, blocks.ErrNoSpace) {
					errc <- fmt.Errorf("worker %d piece %d: PutPiece = %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	puts := int64(workers * each)
	if n := ts.srv.Stats().Requests; n >= puts {
		t.Fatalf("%d requests for %d puts: no batching", n, puts)
	} else {
		t.Logf("%d requests for %d puts", n, puts)
	}
	for w := range workers {
		for i := range each {
			data := batchPiece(w, i)
			if data[0] == 'x' {
				continue
			}
			got, err := c.GetPiece(ctx, blocks.Sum(data))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("piece %d/%d: %d bytes, %v", w, i, len(got), err)
			}
		}
	}
}

// batchPiece is piece i of worker w in TestPutBatches: one in ten starts
// with 'x' (refused), the others never do.
func batchPiece(w, i int) []byte {
	data := blockstest.Random(uint64(w*1000+i), 4096)
	data[0] = 'a'
	if i%10 == 3 {
		data[0] = 'x'
	}
	return data
}
