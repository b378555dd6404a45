package policies

import (
	"fmt"
)

// Facts describes the cluster a policy is to run on.
type Facts struct {
	StorageNodes int // nodes that hold pieces (alive or not, but members)
	Zones        int // distinct zones among those storage nodes
}

// Check reports whether p can be placed on a cluster described by f. It
// first runs Validate. The rules, with P = p.Redundancy.Pieces() and
// T = p.Redundancy.Tolerates():
//
//   - every policy needs at least one storage node;
//   - spread "none": no further rule (pieces may share nodes; this survives
//     corruption, not node loss);
//   - spread "node": P distinct storage nodes, so StorageNodes >= P;
//   - spread "zone": P distinct storage nodes as for "node", and enough
//     zones that losing any one zone loses at most T pieces. Pieces are
//     spread as evenly as possible, so the fullest zone holds ceil(P/Z) of
//     them; hence Zones >= ceil(P/T), and never fewer than 2. For example
//     replicas = 3 needs 2 zones, 4+2 needs 3, 10+2 needs 5, 8+4 needs 3.
//     Check trusts that each zone has enough nodes for its share; placement
//     reports a shortfall when it happens.
//
// The error joins one *Problem per unmet rule (File "" and Line 0), each
// saying what to change; each wraps ErrInvalid.
func (p Policy) Check(f Facts) error {
	if err := p.Validate(); err != nil {
		return err
	}
	var ps []Problem
	add := func(format string, args ...any) {
		ps = append(ps, Problem{Msg: fmt.Sprintf("policy %q: ", p.Name) + fmt.Sprintf(format, args...)})
	}
	r := p.Redundancy
	n := r.Pieces()
	form := fmt.Sprintf("replicas = %d needs", r.Replicas)
	what := "copies"
	lower := "lower replicas"
	if r.Replicas == 0 {
		form = fmt.Sprintf("data = %d and parity = %d need", r.Data, r.Parity)
		what = "pieces"
		lower = "use fewer data or parity pieces"
	}
	if f.StorageNodes < 1 {
		add("this cluster has no storage nodes; start a storage node (cairn node) before creating volumes")
		return joinProblems("", ps)
	}
	if p.Spread == SpreadNode || p.Spread == SpreadZone {
		if f.StorageNodes < n {
			add("%s %d storage nodes with spread = %q; this cluster has %d: %s, or write spread = \"none\" to let %s share nodes (this survives disk corruption, not node loss)",
				form, n, p.Spread, f.StorageNodes, lower, what)
		}
	}
	if p.Spread == SpreadZone {
		if z := minZones(r); f.Zones < z {
			add("%s at least %d zones with spread = \"zone\", so that losing one zone loses at most %d of the %d %s; this cluster has %d: add zones, or write spread = \"node\"",
				form, z, r.Tolerates(), n, what, f.Zones)
		}
	}
	return joinProblems("", ps)
}

// minZones returns the fewest zones over which r's pieces can be spread so
// that losing one zone loses at most r.Tolerates() pieces: ceil(P/T), at
// least 2. It returns a huge number when r tolerates no loss.
func minZones(r Redundancy) int {
	t := r.Tolerates()
	if t < 1 {
		return 1 << 30
	}
	return max(2, (r.Pieces()+t-1)/t)
}
