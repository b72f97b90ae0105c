// Command cgochurn hammers the C allocator from many goroutines while the Go
// heap churns (issue 2 "Done when 3").
//
// -goroutines goroutines (default 100) run rounds until -duration has passed
// (at least one round each). A round makes 64 C.malloc/C.free pairs of
// seeded sizes (filled and checked through unsafe), 16 C.CString/C.GoString
// round trips (freed), and Go garbage: byte slices, maps and strings.
// Every round's result is a checksum that depends only on the goroutine and
// the round number, and is checked against a pure-Go recomputation; so the
// output is deterministic whatever the number of rounds:
//
//	cgochurn: goroutines=100 mismatches=0 checksum=<hex of round 0 of every goroutine>
//
// The round count goes to stderr only with -v. Exit status 1 on a mismatch.
package main

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// rng is a small deterministic generator (xorshift64*), one per goroutine.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return x * 2685821657736338717
}

func seed(g, round int) rng {
	return rng(uint64(g+1)*0x9e3779b97f4a7c15 ^ uint64(round+1)*0xbf58476d1ce4e5b9 | 1)
}

// cRound runs one round through C memory and returns its checksum.
func cRound(g, round int, garbage *[][]byte) (uint64, bool) {
	r := seed(g, round)
	var sum uint64
	ok := true
	for i := 0; i < 64; i++ {
		n := 1 + int(r.next()%4096)
		b := byte(r.next())
		p := C.malloc(C.size_t(n))
		C.memset(p, C.int(b), C.size_t(n))
		mem := unsafe.Slice((*byte)(p), n)
		if mem[0] != b || mem[n-1] != b {
			ok = false
		}
		sum = sum*31 + uint64(mem[n/2]) + uint64(n)
		C.free(p)
	}
	for i := 0; i < 16; i++ {
		s := fmt.Sprintf("g%d-r%d-i%d-%x", g, round, i, r.next())
		cs := C.CString(s)
		back := C.GoString(cs)
		C.free(unsafe.Pointer(cs))
		if back != s {
			ok = false
		}
		sum = sum*131 + uint64(len(back))
	}
	// Go heap churn: garbage that lives a little while, maps and strings.
	m := make(map[uint64]string, 64)
	for i := 0; i < 64; i++ {
		k := r.next()
		m[k] = fmt.Sprint(k)
	}
	for k, v := range m {
		if fmt.Sprint(k) != v {
			ok = false
		}
	}
	buf := make([]byte, 1+int(r.next()%65536))
	buf[len(buf)-1] = 1
	*garbage = append(*garbage, buf)
	if len(*garbage) > 8 {
		*garbage = (*garbage)[1:]
	}
	return sum, ok
}

// goRound recomputes a round's checksum without C.
func goRound(g, round int) uint64 {
	r := seed(g, round)
	var sum uint64
	for i := 0; i < 64; i++ {
		n := 1 + int(r.next()%4096)
		b := byte(r.next())
		sum = sum*31 + uint64(b) + uint64(n)
	}
	for i := 0; i < 16; i++ {
		s := fmt.Sprintf("g%d-r%d-i%d-%x", g, round, i, r.next())
		sum = sum*131 + uint64(len(s))
	}
	return sum
}

func main() {
	duration := flag.Duration("duration", 10*time.Second, "minimum run time")
	goroutines := flag.Int("goroutines", 100, "number of goroutines")
	verbose := flag.Bool("v", false, "print the round count on stderr")
	flag.Parse()

	deadline := time.Now().Add(*duration)
	first := make([]uint64, *goroutines)
	var mismatches, rounds int64
	var wg sync.WaitGroup
	for g := 0; g < *goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var garbage [][]byte
			for round := 0; round == 0 || time.Now().Before(deadline); round++ {
				sum, ok := cRound(g, round, &garbage)
				if !ok || sum != goRound(g, round) {
					atomic.AddInt64(&mismatches, 1)
				}
				if round == 0 {
					first[g] = sum
				}
				atomic.AddInt64(&rounds, 1)
			}
		}(g)
	}
	wg.Wait()

	var total uint64
	for _, s := range first {
		total = total*1000003 ^ s
	}
	if *verbose {
		fmt.Fprintf(os.Stderr, "cgochurn: %d rounds\n", rounds)
	}
	fmt.Printf("cgochurn: goroutines=%d mismatches=%d checksum=%016x\n", *goroutines, mismatches, total)
	if mismatches != 0 {
		os.Exit(1)
	}
}
