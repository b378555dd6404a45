package cairntest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Net is a private network of test hosts: a bridge in the test's network
// namespace and one network namespace per host, each with its own address
// on the bridge (10.99.N.10, .11, ...). Processes run inside a host's
// namespace (Server.Netns); the test itself reaches every host through the
// bridge. Everything is removed at the end of the test.
type Net struct {
	t      testing.TB
	id     string
	prefix string // "10.99.N."
	hosts  []string
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// NewNet creates a network with n hosts.
func NewNet(t testing.TB, n int) *Net {
	t.Helper()
	NeedRoot(t)
	NeedTool(t, "ip")
	id := fmt.Sprintf("c%d%03d", os.Getpid()%10000, rand.IntN(1000))
	nw := &Net{t: t, id: id, prefix: fmt.Sprintf("10.99.%d.", 1+rand.IntN(250))}
	br := "br" + id
	ipCmd(t, "link", "add", br, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	ipCmd(t, "addr", "add", nw.prefix+"1/24", "dev", br)
	ipCmd(t, "link", "set", br, "up")
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("%s-%d", id, i)
		root, inner := fmt.Sprintf("v%s%dr", id, i), fmt.Sprintf("v%s%di", id, i)
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		ipCmd(t, "link", "add", root, "type", "veth", "peer", "name", inner)
		t.Cleanup(func() { exec.Command("ip", "link", "del", root).Run() })
		ipCmd(t, "link", "set", inner, "netns", ns)
		ipCmd(t, "link", "set", root, "master", br)
		ipCmd(t, "link", "set", root, "up")
		ipCmd(t, "netns", "exec", ns, "ip", "addr", "add", fmt.Sprintf("%s%d/24", nw.prefix, 10+i), "dev", inner)
		ipCmd(t, "netns", "exec", ns, "ip", "link", "set", inner, "up")
		ipCmd(t, "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		nw.hosts = append(nw.hosts, ns)
	}
	return nw
}

// IP returns host i's address.
func (nw *Net) IP(i int) string { return fmt.Sprintf("%s%d", nw.prefix, 10+i) }

// Netns returns host i's namespace name.
func (nw *Net) Netns(i int) string { return nw.hosts[i] }

// Cut drops all traffic between host i and the other hosts, both ways,
// inside host i's namespace (the test still reaches it through the
// bridge); the returned function heals the cut.
func (nw *Net) Cut(i int) (heal func()) {
	nw.t.Helper()
	NeedTool(nw.t, "nft")
	var others []string
	for j := range nw.hosts {
		if j != i {
			others = append(others, nw.IP(j))
		}
	}
	set := strings.Join(others, ", ")
	rules := fmt.Sprintf(`table inet cairncut {
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr { %s } drop
	}
	chain out {
		type filter hook output priority 0; policy accept;
		ip daddr { %s } drop
	}
}
`, set, set)
	cmd := exec.Command("ip", "netns", "exec", nw.hosts[i], "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		nw.t.Fatalf("nft: %v: %s", err, out)
	}
	healed := false
	return func() {
		if !healed {
			healed = true
			exec.Command("ip", "netns", "exec", nw.hosts[i], "nft", "delete", "table", "inet", "cairncut").Run()
		}
	}
}

// NewNodeIn prepares a `cairn node` on host i of nw.
func NewNodeIn(t testing.TB, nw *Net, i int, args ...string) *Server {
	t.Helper()
	ip := nw.IP(i)
	p := portLow + rand.IntN(portSpan)
	s := &Server{t: t, Data: t.TempDir() + "/data", Listen: fmt.Sprintf("%s:%d", ip, p), NBD: fmt.Sprintf("%s:%d", ip, p+5), Args: args, Netns: nw.Netns(i)}
	return s
}
