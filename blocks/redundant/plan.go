package redundant

import "slices"

// Holding is what the holder of one rank of a block keeps of it, as a
// read or a question found out.
type Holding struct {
	// Has lists the indexes of the intact pieces the holder keeps.
	Has []int
	// Pending lists the indexes of intact pieces kept for the holder on
	// other nodes (a fallback's copy, to be given back): they count as
	// the holder's unless a holder keeps that index itself. (A fallback
	// search may find a shard another holder keeps as its own.)
	Pending []int
	// Bad is the index of a piece the holder keeps that is bad (fails a
	// checksum, or disagrees with the block), or -1.
	Bad int
	// Unknown: the holder could not be asked (unreachable, or not read).
	// It is taken to keep its rank's piece, and gets nothing.
	Unknown bool
}

// Fix is one piece a repair writes: piece Piece of the block, on the
// holder ranked Holder, after deleting the bad piece that holder keeps
// under the key of index Bad (-1: none).
type Fix struct {
	Holder, Piece, Bad int
}

// Plan returns the pieces to write so that the block's holders, one
// Holding per rank (len(held) = the block's pieces), keep every piece
// again, moving as little as it can: a holder keeps what it has, under
// whatever index it has it, and only a holder that keeps nothing usable
// gets a piece.
//
// For replicas, any replica will do: a holder with none gets the replica
// of its rank (the key a read looks under first), and loses the bad one
// it keeps, if any.
//
// For erasure-coded shards, the holders must keep distinct indexes, and
// every index must be kept: holders keep their rank's index where they
// have it, then any other index they have that no holder kept yet; the
// indexes left over go to the holders left over (its bad piece's index
// first, then its rank's, then the lowest free). A holder left with
// only duplicates keeps them (the index is kept elsewhere too, so that
// costs space, never safety) and gets a free index as well. A bad piece
// whose index another holder keeps intact is deleted as the holder gets
// its new one; one whose index only an Unknown holder is taken to keep
// is left alone (a delete reaches the block's fallbacks too, and one of
// them may have the only copy).
//
// Why not by rank: piece i was written under PieceKey(addr, i) on the
// holder ranked i, but when a holder leaves, every holder after it moves
// up a rank. Rewriting each moved rank's piece cost about 2.5 pieces for
// each piece lost with replicas = 3 on 4 nodes, and 3 for 4+2 shards
// (docs/placement.md, "set" against "positional"); following the set
// rewrites the piece that was lost, once.
func (s *Store) Plan(held []Holding) []Fix {
	var fixes []Fix
	if s.kind == kindReplica {
		for r, h := range held {
			if h.Unknown || len(h.Has) > 0 || len(h.Pending) > 0 {
				continue
			}
			bad := -1
			if h.Bad >= 0 && h.Bad < s.n {
				bad = h.Bad
			}
			fixes = append(fixes, Fix{Holder: r, Piece: r, Bad: bad})
		}
		return fixes
	}
	const (
		free    = 0
		assumed = 1 // an Unknown holder is taken to keep it
		kept    = 2 // a holder keeps it intact
	)
	state := make([]int, s.n)
	done := make([]bool, len(held))
	for r, h := range held {
		if h.Unknown && r < s.n {
			state[r], done[r] = assumed, true
		}
	}
	for r, h := range held { // their own rank's piece
		if !done[r] && r < s.n && state[r] == free && slices.Contains(h.Has, r) {
			state[r], done[r] = kept, true
		}
	}
	// Then the first free index among those it keeps, and last, among
	// those waiting for it elsewhere.
	claim := func(r int, js []int) {
		for _, j := range js {
			if !done[r] && j >= 0 && j < s.n && state[j] == free {
				state[j], done[r] = kept, true
			}
		}
	}
	for r, h := range held {
		claim(r, h.Has)
	}
	for r, h := range held {
		claim(r, h.Pending)
	}
	for r, h := range held { // the rest get what is left
		if done[r] {
			continue
		}
		j := -1
		switch {
		case h.Bad >= 0 && h.Bad < s.n && state[h.Bad] == free:
			j = h.Bad
		case r < s.n && state[r] == free:
			j = r
		default:
			for i, st := range state {
				if st == free {
					j = i
					break
				}
			}
		}
		if j < 0 {
			break // more holders than pieces: only a bad input does that
		}
		bad := -1
		if h.Bad >= 0 && h.Bad < s.n && (h.Bad == j || state[h.Bad] == kept) {
			bad = h.Bad
		}
		state[j], done[r] = kept, true
		fixes = append(fixes, Fix{Holder: r, Piece: j, Bad: bad})
	}
	return fixes
}
