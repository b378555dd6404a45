package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers are pooled by power-of-two size class, from 4 KiB to
// 32 MiB; larger ones are allocated and dropped.
const (
	minClassShift = 12
	maxClassShift = 25
)

var bufPools [maxClassShift - minClassShift + 1]sync.Pool

// class returns the size-class index for n bytes, or -1 if n is larger than
// the largest class.
func class(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	shift := bits.Len(uint(n - 1))
	if shift > maxClassShift {
		return -1
	}
	return shift - minClassShift
}

// getBuf returns a buffer of length n. Its contents are undefined.
func getBuf(n int) *[]byte {
	c := class(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minClassShift))
	return &b
}

// putBuf returns a buffer from getBuf to its pool. The caller must not use
// it afterwards.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	c := class(cap(*p))
	if c < 0 || cap(*p) != 1<<(c+minClassShift) {
		return
	}
	bufPools[c].Put(p)
}
