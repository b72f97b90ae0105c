// Command leakyservice is a service-like cgo program with known off-heap
// behaviour, for leak hunts with offheap (issue 5 "Done when 1", issue 3
// "Done when 1", issue 4 "Done when 1/3/5").
//
// While it runs, at rates fixed by flags:
//
//	(a) leak      main.handleRequest: one C.CString of -leak-bytes bytes
//	              (NUL included) per request, never freed, -rate requests/s;
//	(b) bounded   main.cachePut: a C.malloc'd cache of -cache-cap entries of
//	              -cache-bytes, filled at -cache-rate inserts/s, oldest
//	              entries evicted with C.free beyond the capacity (plateaus);
//	(c) transient main.transientBurst: -burst-count blocks of -burst-bytes
//	              at -burst-at, all freed -burst-hold (1 s) later;
//	(d) raw mmap  main.mapRegion: one syscall.Mmap of -mmap-bytes every
//	              1/-mmap-rate seconds, never unmapped (a raw syscall that no
//	              LD_PRELOAD hook sees; liboffheap's Go probes do);
//	(e) C leak    leaky_c_helper, a C function of the cgo preamble called by
//	              main.callCHelper, leaks -chelper-bytes at -chelper-rate/s.
//
// Work is paced against the clock (catching up when late), so the number of
// operations after t seconds is floor(t * rate) and the true rates are
// exact. They are printed at start as one JSON line on stderr, prefixed by
// "leakyservice: truth ". Go programs leave through exit_group, which no libc
// exit hook sees; liboffheap's Go probes write the exit dump. Run with
// OFFHEAP_INTERVAL for growth over time, or pass -wait-stdin and take
// `offheap snapshot <pid>` of the idle service before closing stdin.
package main

/*
#include <stdlib.h>
#include <string.h>

// A leak inside C code called from Go: the stack must show this function
// and then its Go caller, main.callCHelper.
// The block is parked in a volatile global: gcc deletes a malloc whose
// result is never used.
static void *volatile leaky_last;
__attribute__((noipa)) static void leaky_c_helper(size_t n) {
	char *p = malloc(n); // @line leaky_c_helper
	if (p) memset(p, 0x11, n);
	leaky_last = p;
}
*/
import "C"

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

type config struct {
	duration     time.Duration
	rate         int
	leakBytes    int
	cacheCap     int
	cacheRate    int
	cacheBytes   int
	burstAt      time.Duration
	burstHold    time.Duration
	burstCount   int
	burstBytes   int
	mmapRate     float64
	mmapBytes    int
	chelperRate  int
	chelperBytes int
	waitStdin    bool
}

// Sink for request results so the compiler keeps the work.
var served int64

// handleRequest is the leaky handler: the C string handed to C is never freed.
//
//go:noinline
func handleRequest(id int, size int) int {
	body := fmt.Sprintf("request %d ", id)
	msg := body + strings.Repeat("x", size-1-len(body)) // size-1 chars + NUL = size bytes
	cs := C.CString(msg)                                // @line handleRequest
	// Bug on purpose: missing `defer C.free(unsafe.Pointer(cs))`.
	return int(C.strlen(cs))
}

// serveLoop runs in its own goroutine (entry: runtime.goexit).
func serveLoop(cfg config, start time.Time, done *sync.WaitGroup) {
	defer done.Done()
	pace(start, cfg.duration, float64(cfg.rate), func(i int) {
		served += int64(handleRequest(i, cfg.leakBytes))
	})
}

type cache struct {
	entries []unsafe.Pointer // FIFO, oldest first
	cap     int
	bytes   int
}

// cachePut adds a C.malloc'd entry and evicts the oldest beyond capacity.
//
//go:noinline
func (c *cache) put(key int) {
	p := C.malloc(C.size_t(c.bytes))
	C.memset(p, C.int(key&0xff), C.size_t(c.bytes))
	c.entries = append(c.entries, p)
	for len(c.entries) > c.cap {
		C.free(c.entries[0])
		c.entries = c.entries[1:]
	}
}

//go:noinline
func cachePut(c *cache, key int) { c.put(key) }

func cacheLoop(cfg config, start time.Time, done *sync.WaitGroup) {
	defer done.Done()
	c := &cache{cap: cfg.cacheCap, bytes: cfg.cacheBytes}
	pace(start, cfg.duration, float64(cfg.cacheRate), func(i int) { cachePut(c, i) })
}

// transientBurst allocates a burst that burstLoop releases -burst-hold later.
//
//go:noinline
func transientBurst(count, size int) []unsafe.Pointer {
	blocks := make([]unsafe.Pointer, 0, count)
	for i := 0; i < count; i++ {
		p := C.malloc(C.size_t(size))
		C.memset(p, 0x22, C.size_t(size))
		blocks = append(blocks, p)
	}
	return blocks
}

func burstLoop(cfg config, start time.Time, done *sync.WaitGroup) {
	defer done.Done()
	if cfg.burstCount == 0 || cfg.burstAt >= cfg.duration {
		return
	}
	time.Sleep(time.Until(start.Add(cfg.burstAt)))
	blocks := transientBurst(cfg.burstCount, cfg.burstBytes)
	time.Sleep(cfg.burstHold)
	for _, p := range blocks {
		C.free(p)
	}
}

var regions [][]byte

// mapRegion leaks an anonymous mapping made by a raw syscall.
//
//go:noinline
func mapRegion(size int) {
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leakyservice: mmap:", err)
		os.Exit(1)
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1 // commit the pages so RSS shows them too
	}
	regions = append(regions, b)
}

func mmapLoop(cfg config, start time.Time, done *sync.WaitGroup) {
	defer done.Done()
	pace(start, cfg.duration, cfg.mmapRate, func(int) { mapRegion(cfg.mmapBytes) })
}

// callCHelper is the Go caller of the leaking C function.
//
//go:noinline
func callCHelper(n int) {
	C.leaky_c_helper(C.size_t(n)) // @line callCHelper
}

func chelperLoop(cfg config, start time.Time, done *sync.WaitGroup) {
	defer done.Done()
	pace(start, cfg.duration, float64(cfg.chelperRate), func(int) { callCHelper(cfg.chelperBytes) })
}

// pace calls f(i) for i = 0, 1, ... so that after t seconds exactly
// floor(t*rate) calls were made (never more), until d has elapsed.
func pace(start time.Time, d time.Duration, rate float64, f func(int)) {
	if rate <= 0 {
		return
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		elapsed := time.Since(start)
		if elapsed > d {
			elapsed = d
		}
		target := int(elapsed.Seconds() * rate)
		for ; n < target; n++ {
			f(n)
		}
		if elapsed >= d {
			return
		}
		<-tick.C
	}
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 40*time.Second, "how long to run")
	flag.IntVar(&cfg.rate, "rate", 50, "(a) requests per second, each leaking one C string")
	flag.IntVar(&cfg.leakBytes, "leak-bytes", 1000, "(a) bytes per leaked C string, NUL included (>= 32)")
	flag.IntVar(&cfg.cacheCap, "cache-cap", 400, "(b) cache capacity in entries")
	flag.IntVar(&cfg.cacheRate, "cache-rate", 100, "(b) cache inserts per second")
	flag.IntVar(&cfg.cacheBytes, "cache-bytes", 2048, "(b) bytes per cache entry")
	flag.DurationVar(&cfg.burstAt, "burst-at", 5*time.Second, "(c) when the transient burst happens")
	flag.DurationVar(&cfg.burstHold, "burst-hold", time.Second, "(c) how long the burst is held before it is freed")
	flag.IntVar(&cfg.burstCount, "burst-count", 200, "(c) blocks in the burst (0 = none)")
	flag.IntVar(&cfg.burstBytes, "burst-bytes", 10000, "(c) bytes per burst block")
	flag.Float64Var(&cfg.mmapRate, "mmap-rate", 1, "(d) syscall.Mmap leaks per second")
	flag.IntVar(&cfg.mmapBytes, "mmap-bytes", 65536, "(d) bytes per leaked mapping (page multiple)")
	flag.IntVar(&cfg.chelperRate, "chelper-rate", 10, "(e) leaky C helper calls per second")
	flag.IntVar(&cfg.chelperBytes, "chelper-bytes", 512, "(e) bytes leaked per C helper call")
	flag.BoolVar(&cfg.waitStdin, "wait-stdin", false, "after -duration, idle until stdin is closed")
	flag.Parse()
	if cfg.leakBytes < 32 {
		fmt.Fprintln(os.Stderr, "leakyservice: -leak-bytes must be >= 32")
		os.Exit(2)
	}

	truth := map[string]interface{}{
		"pid":                             os.Getpid(),
		"duration_s":                      cfg.duration.Seconds(),
		"leak_function":                   "main.handleRequest",
		"leak_bytes_per_sec":              cfg.rate * cfg.leakBytes,
		"leak_count_per_sec":              cfg.rate,
		"leak_block_bytes":                cfg.leakBytes,
		"cache_function":                  "main.(*cache).put",
		"cache_plateau_bytes":             cfg.cacheCap * cfg.cacheBytes,
		"cache_block_bytes":               cfg.cacheBytes,
		"burst_function":                  "main.transientBurst",
		"burst_bytes":                     cfg.burstCount * cfg.burstBytes,
		"burst_at_s":                      cfg.burstAt.Seconds(),
		"burst_hold_s":                    cfg.burstHold.Seconds(),
		"mmap_function":                   "main.mapRegion",
		"mmap_bytes_per_sec":              cfg.mmapRate * float64(cfg.mmapBytes),
		"chelper_c_function":              "leaky_c_helper",
		"chelper_go_function":             "main.callCHelper",
		"chelper_bytes_per_sec":           cfg.chelperRate * cfg.chelperBytes,
		"chelper_block_bytes":             cfg.chelperBytes,
		"goroutine_entry":                 "runtime.goexit",
		"handler_goroutine_caller":        "main.serveLoop",
		"c_string_bytes_include_nul_byte": true,
	}
	line, _ := json.Marshal(truth)
	fmt.Fprintf(os.Stderr, "leakyservice: truth %s\n", line)

	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(5)
	go serveLoop(cfg, start, &wg)
	go cacheLoop(cfg, start, &wg)
	go burstLoop(cfg, start, &wg)
	go mmapLoop(cfg, start, &wg)
	go chelperLoop(cfg, start, &wg)
	wg.Wait()

	if cfg.waitStdin {
		fmt.Fprintln(os.Stderr, "leakyservice: done, waiting for stdin to close")
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	fmt.Fprintf(os.Stderr, "leakyservice: served %d bytes of responses\n", served)
}
