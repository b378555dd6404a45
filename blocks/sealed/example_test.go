package sealed_test

import (
	"bytes"
	"context"
	"fmt"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/blocks/redundant"
	"cairn/blocks/sealed"
	"cairn/policies"
)

// A volume's block pipeline: lz4 and AES-256-GCM with dedup, over 4+2
// erasure coding on six holders.
func ExampleNew() {
	var holders []blocks.Holder
	for range 6 {
		holders = append(holders, memory.New(0))
	}
	r, err := redundant.New(redundant.Options{
		Data: 4, Parity: 2,
		Holders: func(blocks.Addr, int) []blocks.Holder { return holders },
		All:     func() []blocks.Holder { return holders },
	})
	if err != nil {
		panic(err)
	}
	volumeKey := bytes.Repeat([]byte{7}, sealed.KeySize) // from the key store, in real life
	s, err := sealed.New(r, sealed.Options{
		Compression: policies.CompressionLZ4,
		Cipher:      policies.CipherAES256,
		Key:         volumeKey,
		Dedup:       true,
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	chunk := bytes.Repeat([]byte("hello, disk "), 1000)
	addr, size, err := s.PutSized(ctx, chunk)
	if err != nil {
		panic(err)
	}
	again, _ := s.Put(ctx, chunk) // dedup: the same address
	if err := s.Sync(ctx); err != nil {
		panic(err)
	}
	got, err := s.Get(ctx, addr)
	if err != nil {
		panic(err)
	}
	fmt.Println(bytes.Equal(got, chunk), again == addr, size < len(chunk))
	// Output: true true true
}
