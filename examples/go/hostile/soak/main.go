// Command soak is a steady, non-leaking cgo service for the soak script
// (scripts/soak.sh, issue 7): whatever the duration, the amount of C memory it
// holds is bounded, so the library's own memory must plateau too.
//
// While it runs (-duration), -workers goroutines each:
//   - keep a ring of -ring C.malloc'd buffers of varying sizes, replacing one
//     entry per operation (live allocations of every age, bounded count);
//   - make C.CString/C.free round trips and calloc/realloc/free chains;
//   - churn the Go heap (slices, maps, strings);
//
// and every -thread-churn a goroutine locks itself to a fresh OS thread and
// exits while locked, so the runtime destroys that thread (threads come and
// go all the time, as in a real service). Work is paced (-ops per second per
// worker) so the soak does not monopolise the machine.
//
// At the end it frees every ring and prints one line on stdout:
//
//	soak: workers=W ops=N mismatches=0
//
// and exits 1 if a buffer ever held the wrong bytes.
package main

/*
#include <stdlib.h>
#include <string.h>

// Calloc, grow with realloc, check, free: a C-side allocation chain.
static int chain(size_t n, unsigned char b) {
	unsigned char *p = calloc(n, 1);
	if (!p) return 0;
	if (p[n - 1] != 0) { free(p); return 0; }
	unsigned char *q = realloc(p, 2 * n);
	if (!q) { free(p); return 0; }
	memset(q, b, 2 * n);
	int ok = q[0] == b && q[2 * n - 1] == b;
	free(q);
	return ok;
}
*/
import "C"

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return x * 2685821657736338717
}

var (
	ops        atomic.Int64
	mismatches atomic.Int64
	sink       atomic.Int64
)

type slot struct {
	p unsafe.Pointer
	n int
	b byte
}

func worker(id, ring, perSec int, deadline time.Time, wg *sync.WaitGroup) {
	defer wg.Done()
	r := rng(uint64(id+1)*0x9e3779b97f4a7c15 | 1)
	slots := make([]slot, ring)
	tick := time.NewTicker(time.Second / time.Duration(perSec))
	defer tick.Stop()
	for time.Now().Before(deadline) {
		<-tick.C
		// Replace one ring entry, checking the bytes of the old one.
		i := int(r.next() % uint64(ring))
		if s := slots[i]; s.p != nil {
			m := unsafe.Slice((*byte)(s.p), s.n)
			if m[0] != s.b || m[s.n-1] != s.b {
				mismatches.Add(1)
			}
			C.free(s.p)
		}
		n := 1 + int(r.next()%8192)
		if r.next()%64 == 0 {
			n = 200_000 + int(r.next()%100_000) // mmap-backed by glibc
		}
		b := byte(r.next())
		p := C.malloc(C.size_t(n))
		C.memset(p, C.int(b), C.size_t(n))
		slots[i] = slot{p, n, b}

		cs := C.CString("request-" + strconv.FormatUint(r.next(), 36))
		sink.Add(int64(C.strlen(cs)))
		C.free(unsafe.Pointer(cs))

		if C.chain(C.size_t(1+r.next()%4096), C.uchar(b)) == 0 {
			mismatches.Add(1)
		}

		// Go heap churn.
		g := make([]byte, 1+int(r.next()%16384))
		mp := map[int]string{int(b): string(g[:1])}
		sink.Add(int64(len(g) + len(mp)))
		ops.Add(1)
	}
	for _, s := range slots {
		if s.p != nil {
			C.free(s.p)
		}
	}
}

// threadChurn makes the runtime create and destroy OS threads: a goroutine
// that exits while locked to its thread takes the thread with it.
func threadChurn(every time.Duration, deadline time.Time, wg *sync.WaitGroup) {
	defer wg.Done()
	for time.Now().Before(deadline) {
		var done sync.WaitGroup
		for i := 0; i < 4; i++ {
			done.Add(1)
			go func() {
				defer done.Done()
				runtime.LockOSThread()
				p := C.malloc(64)
				C.free(p)
			}()
		}
		done.Wait()
		time.Sleep(every)
	}
}

func main() {
	duration := flag.Duration("duration", 30*time.Minute, "how long to run")
	workers := flag.Int("workers", 16, "worker goroutines")
	ring := flag.Int("ring", 512, "live C buffers per worker")
	perSec := flag.Int("ops", 200, "operations per second per worker")
	churn := flag.Duration("thread-churn", 500*time.Millisecond, "pause between thread churn rounds")
	flag.Parse()

	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go worker(i, *ring, *perSec, deadline, &wg)
	}
	wg.Add(1)
	go threadChurn(*churn, deadline, &wg)
	wg.Wait()
	fmt.Printf("soak: workers=%d ops=%d mismatches=%d\n", *workers, ops.Load(), mismatches.Load())
	if mismatches.Load() != 0 {
		os.Exit(1)
	}
}
