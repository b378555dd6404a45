package node

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"time"

	"cairn/overlay"
)

// membersFile keeps the gossip addresses of the members a node last saw,
// so that a restarted node rejoins them with no --join:
//
//	{"format":1,"members":["127.0.0.3:7000","127.0.0.4:7000"]}
const membersFile = "members.json"

type membersDoc struct {
	Format  int      `json:"format"`
	Members []string `json:"members"`
}

// loadMembers returns the remembered gossip addresses, without self.
func loadMembers(dir, self string) []string {
	b, err := os.ReadFile(filepath.Join(dir, membersFile))
	if err != nil {
		return nil
	}
	var d membersDoc
	if json.Unmarshal(b, &d) != nil || d.Format != 1 {
		return nil
	}
	return slices.DeleteFunc(d.Members, func(a string) bool { return a == self || a == "" })
}

// remember saves the current members' gossip addresses when they changed,
// and calls remembered members that are not in the cluster now (a node
// that restarted alone finds its peers again this way).
func (c *cluster) remember(ctx context.Context) {
	var addrs []string
	present := map[string]bool{}
	for _, m := range c.ml.Members() {
		if m.State == overlay.Alive || m.State == overlay.Suspect || m.State == overlay.Dead {
			if m.Addr != "" && m.Node.ID != c.self.ID {
				addrs = append(addrs, m.Addr)
			}
			if m.State != overlay.Dead {
				present[m.Addr] = true
			}
		}
	}
	slices.Sort(addrs)
	if !slices.Equal(addrs, c.known) && len(addrs) > 0 {
		b, _ := json.Marshal(membersDoc{Format: 1, Members: addrs})
		if err := writeFileSync(filepath.Join(c.n.cfg.DataDir, membersFile), b, 0o644); err == nil {
			c.known = addrs
		}
	}
	var missing []string
	for _, a := range c.known {
		if !present[a] {
			missing = append(missing, a)
		}
	}
	if len(missing) > 0 && time.Since(c.lastContact) > 10*time.Second {
		c.lastContact = time.Now()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if n, err := c.ml.Contact(cctx, missing); err == nil && n > 0 {
			c.log.Info("found remembered members again", "answered", n)
		}
	}
}
