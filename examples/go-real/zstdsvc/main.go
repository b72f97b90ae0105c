// Command zstdsvc is a cgo service on a real C library, github.com/DataDog/zstd (zstd's C
// sources compiled into the binary), with one known off-heap leak, for leak hunts and
// overhead benchmarks with offheap (issues 13 and 14).
//
// Two paths run at rates fixed by flags, paced against the clock:
//
//	correct main.compressReply:      NewWriter, Write, Close: the C stream is freed
//	leak    main.compressForArchive: NewWriter, Write, and no Close: the C compression
//	                                 context (and the workspace its first Write sizes) leaks
//
// On stderr it prints its truth: at start "zstdsvc: truth {json}" (configured rates and the
// C bytes one leaked writer holds, measured with mallinfo2 around a writer before any load),
// at the end "zstdsvc: done {json}" (calls per path, achieved rates, writers leaked).
//
// -bench N runs N correct-path requests flat out instead and prints ops/s on stdout.
//
// Go programs leave through exit_group, which skips liboffheap's exit dump: run it under the
// library with OFFHEAP_INTERVAL set and a -duration of several intervals.
package main

/*
#include <malloc.h>

// Bytes the C allocator hands out right now (heap chunks plus mmapped chunks), summed over
// all arenas: the difference across one writer's life is what that writer holds in C.
static size_t c_bytes_in_use(void) {
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}
*/
import "C"

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/DataDog/zstd"

	"offheap.example/goreal/internal/svc"
)

// Writers of the leak path stay reachable here only until the next one replaces them: their
// Go side is garbage, their C side is not, which is the bug this program reproduces.
var lastArchive *zstd.Writer

// sink keeps the compressed sizes observable so no call is optimised away.
var sink [2]int // one per paced path: the two goroutines never write the same variable

// payload builds a reply body of n bytes that compresses like real JSON (repetitive keys,
// varying values).
func payload(id, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"request":%d,"item":%d,"name":"item-%d","price":%d.%02d,"tags":["a","b"]},`,
			id, i, (id*31+i)%997, (id+i)%500, i%100)
	}
	return b.Bytes()[:n]
}

// compressReply is the correct path: the writer is closed, which frees its C stream.
//
//go:noinline
func compressReply(body []byte) int {
	var out bytes.Buffer
	w := zstd.NewWriter(&out)
	if _, err := w.Write(body); err != nil {
		fail(err)
	}
	if err := w.Close(); err != nil {
		fail(err)
	}
	return out.Len()
}

// compressForArchive is the leak: the writer is written to and dropped without Close, so
// ZSTD_freeCStream never runs (the binding sets no finalizer).
//
//go:noinline
func compressForArchive(body []byte) int {
	var out bytes.Buffer
	w := zstd.NewWriter(&out)
	if _, err := w.Write(body); err != nil {
		fail(err)
	}
	lastArchive = w
	return out.Len()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "zstdsvc:", err)
	os.Exit(1)
}

// leakedBytesPerWriter measures, before any other load, the C bytes one unclosed writer
// holds: the median of a few writers, each closed afterwards so the measurement leaks nothing.
func leakedBytesPerWriter(body []byte) int {
	var got []int
	for i := 0; i < 5; i++ {
		before := C.c_bytes_in_use()
		var out bytes.Buffer
		w := zstd.NewWriter(&out)
		if _, err := w.Write(body); err != nil {
			fail(err)
		}
		got = append(got, int(C.c_bytes_in_use())-int(before))
		if err := w.Close(); err != nil {
			fail(err)
		}
	}
	sort.Ints(got)
	return got[len(got)/2]
}

func main() {
	duration := flag.Duration("duration", 30*time.Second, "how long the service runs")
	replyRate := flag.Float64("rate", 200, "correct-path requests (main.compressReply) per second")
	leakRate := flag.Float64("leak-rate", 2, "leak-path requests (main.compressForArchive) per second")
	size := flag.Int("payload", 4096, "bytes compressed per request")
	bench := flag.Int("bench", 0, "run this many correct-path requests flat out, print ops/s, exit")
	workers := flag.Int("workers", 1, "goroutines sharing the -bench requests")
	flag.Parse()

	// A few distinct bodies, built once: the benchmark measures compression, not fmt.
	bodies := make([][]byte, 16)
	for i := range bodies {
		bodies[i] = payload(i, *size)
	}

	if *bench > 0 {
		svc.Bench("zstdsvc", *bench, *workers, func(_, i int) {
			compressReply(bodies[i%len(bodies)]) // a call into C is never elided; no shared sink to race on
		})
		return
	}

	perWriter := leakedBytesPerWriter(bodies[0])
	svc.Truth("zstdsvc", "truth", map[string]any{
		"duration_s":               duration.Seconds(),
		"payload_bytes":            *size,
		"compressReply_per_s":      *replyRate,
		"compressForArchive_per_s": *leakRate,
		"leaked_bytes_per_writer":  perWriter,
		"leak_bytes_per_s":         *leakRate * float64(perWriter),
	})
	counts, elapsed := svc.Run(*duration, []float64{*replyRate, *leakRate}, []func(int){
		func(i int) { sink[0] += compressReply(bodies[i%len(bodies)]) },
		func(i int) { sink[1] += compressForArchive(bodies[i%len(bodies)]) },
	})
	s := elapsed.Seconds()
	svc.Truth("zstdsvc", "done", map[string]any{
		"elapsed_s":                s,
		"compressReply_calls":      counts[0],
		"compressForArchive_calls": counts[1],
		"compressReply_per_s":      float64(counts[0]) / s,
		"compressForArchive_per_s": float64(counts[1]) / s,
		"writers_leaked":           counts[1],
		"leaked_bytes_estimate":    counts[1] * perWriter,
	})
}
