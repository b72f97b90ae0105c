// Command arenachurn is a cgo service whose RSS ratchets up through glibc
// arena retention while its live C memory stays bounded, next to one small
// real leak (issue 11 "Done when 1").
//
// -workers goroutines each call runtime.LockOSThread, so each owns one OS
// thread and glibc gives each thread its own malloc arena. Each worker runs
// rounds through churn_round (C, in the preamble below): a round mallocs n
// blocks of -min-bytes..-max-bytes, keeps about -survive-pct percent of
// -round-allocs of them (a fixed count, plus always the last block, which
// sits at the arena's top) and frees the rest; survivors are freed
// -survive-rounds rounds later. n ramps from -round-allocs/8 to -round-allocs
// over -ramp, so every round's transient peak is a little higher than the
// last: each arena keeps its high-water mark resident (freed chunks below a
// live one are never returned), and RSS ratchets while the live C memory
// stays flat. Rounds take turns (one at a time, -pause apart per worker;
// -overlap lets them run together). With MALLOC_ARENA_MAX=1 all workers
// share one arena and reuse each other's freed chunks, so RSS grows much
// less. Measured here (8 workers, 20 s): VmRSS 33 MB at 2 s, 159 MB at 20 s;
// with MALLOC_ARENA_MAX=1 11 MB and 29 MB; churn live bytes ~4.2 MB in both.
// The churn path's live bytes fill up during the first -survive-rounds
// rounds (~3 s), then stay flat.
//
// main.leakyHandler mallocs -leak-bytes -leak-rate times per second and never
// frees them: the one real leak.
//
// Truth on stderr, prefixed "arenachurn: ": at start
//
//	arenachurn: truth-start {"workers":8,"leak_bytes_per_sec":4096,...}
//
// and after -duration
//
//	arenachurn: truth {"leak_bytes":N,"leak_count":K,"churn_live_bytes":B,
//	  "churn_live_count":C,"threads_locked":8,"threads":"14","arenas":14,
//	  "rounds":R,"vmrss":"161892 kB","mallinfo_arena":A,...}
//
// churn_live_* are the churn path's blocks still allocated at the end (the
// survivors of the last -survive-rounds rounds); threads and arenas
// (malloc_info's <heap> count) are taken just before the workers stop, and
// arenas exceed workers because other Ms malloc too; arenas_end is the same count
// taken with mallinfo_* after the workers stopped. -rss-every prints VmRSS
// from /proc/self/status at that interval ("arenachurn: rss t=2.0s 41234 kB").
package main

/*
#include <malloc.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// One worker's survivors, a ring of generations. Only its own thread touches
// it, so no lock.
typedef struct {
	void **slot;        // gens * cap pointers
	size_t *size;       // bytes of each slot
	size_t *count;      // live survivors per generation
	size_t gens, cap;
	uint64_t rng;
	size_t live_bytes, live_count;
} churn_state;

static churn_state *churn_new(size_t gens, size_t cap, uint64_t seed) {
	churn_state *s = calloc(1, sizeof *s);
	s->slot = calloc(gens * cap, sizeof(void *));
	s->size = calloc(gens * cap, sizeof(size_t));
	s->count = calloc(gens, sizeof(size_t));
	s->gens = gens;
	s->cap = cap;
	s->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	return s;
}

static uint64_t churn_rand(churn_state *s) {
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

// Sized blocks are written so their pages are really resident. The work
// array is malloc'd too (it lives in the same arena, like a real request's
// scratch state) and freed at the end of the round.
__attribute__((noinline)) static size_t churn_round(churn_state *s, uint64_t round, size_t n,
		size_t min_b, size_t max_b, size_t keep_n) {
	void **blk = malloc(n * sizeof(void *));
	size_t *sz = malloc(n * sizeof(size_t));
	size_t g = round % s->gens;
	// The generation being reused holds survivors from gens rounds ago.
	for (size_t i = 0; i < s->count[g]; i++) {
		s->live_bytes -= s->size[g * s->cap + i];
		s->live_count--;
		free(s->slot[g * s->cap + i]);
	}
	s->count[g] = 0;
	for (size_t i = 0; i < n; i++) {
		sz[i] = min_b + churn_rand(s) % (max_b - min_b + 1);
		blk[i] = malloc(sz[i]);
		memset(blk[i], (int)(i & 0xff), sz[i]);
	}
	// About keep_n survivors spread over the round, plus the last block,
	// which sits at the arena's top and keeps it from being trimmed.
	for (size_t i = 0; i < n; i++) {
		int keep = (churn_rand(s) % n < keep_n || i == n - 1) && s->count[g] < s->cap;
		if (keep) {
			size_t k = g * s->cap + s->count[g]++;
			s->slot[k] = blk[i];
			s->size[k] = sz[i];
			s->live_bytes += sz[i];
			s->live_count++;
		} else {
			free(blk[i]);
		}
	}
	free(sz);
	free(blk);
	return n;
}

static size_t churn_live_bytes(churn_state *s) { return s->live_bytes; }
static size_t churn_live_count(churn_state *s) { return s->live_count; }

// malloc_info writes one <heap nr="..."> element per arena.
static int arena_count(void) {
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f) return -1;
	malloc_info(0, f);
	fclose(f);
	int n = 0;
	for (char *p = buf; (p = strstr(p, "<heap nr=")) != NULL; p++) n++;
	free(buf);
	return n;
}

static void arena_info(size_t *arena, size_t *inuse, size_t *free_b) {
	struct mallinfo2 m = mallinfo2();
	*arena = m.arena;
	*inuse = m.uordblks;
	*free_b = m.fordblks;
}
*/
import "C"

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

type config struct {
	workers       int
	duration      time.Duration
	roundAllocs   int
	minBytes      int
	maxBytes      int
	survivePct    int
	surviveRounds int
	pause         time.Duration
	ramp          time.Duration
	overlap       bool
	leakBytes     int
	leakRate      float64
	rssEvery      time.Duration
}

var (
	// Rounds take turns unless -overlap: a request queue served by a pool
	// of threads. Each thread's arena then keeps the peak of its own
	// rounds, while a single shared arena would need only one round's peak.
	turn      sync.Mutex
	rounds    atomic.Int64
	leakCount int64 // only leakLoop writes it
	leakKeep  []unsafe.Pointer
)

// leakyHandler is the real leak: a request buffer nobody frees.
//
//go:noinline
func leakyHandler(n int) {
	p := C.malloc(C.size_t(n))
	C.memset(p, 0x5a, C.size_t(n))
	leakKeep = append(leakKeep, p)
	leakCount++
}

// roundSize ramps linearly from an eighth of -round-allocs to all of it over
// -ramp: each round's transient peak is a little higher than the last, and
// that high-water mark is what an arena keeps.
func roundSize(cfg config, t time.Duration) int {
	lo := cfg.roundAllocs / 8
	if cfg.ramp <= 0 || t >= cfg.ramp {
		return cfg.roundAllocs
	}
	return lo + int(float64(cfg.roundAllocs-lo)*float64(t)/float64(cfg.ramp))
}

// churnWorker owns its thread for life, hence its arena.
func churnWorker(id int, cfg config, stop <-chan struct{}, wg *sync.WaitGroup, live *[2]int64) {
	defer wg.Done()
	runtime.LockOSThread()
	keep := cfg.roundAllocs * cfg.survivePct / 100
	s := C.churn_new(C.size_t(cfg.surviveRounds), C.size_t(2*keep+64), C.uint64_t(id+1))
	start := time.Now()
	for r := uint64(0); ; r++ {
		select {
		case <-stop:
			live[0] = int64(C.churn_live_bytes(s))
			live[1] = int64(C.churn_live_count(s))
			// Survivors stay allocated on purpose: they are the truth printed.
			return
		default:
		}
		if !cfg.overlap {
			turn.Lock()
		}
		C.churn_round(s, C.uint64_t(r), C.size_t(roundSize(cfg, time.Since(start))), C.size_t(cfg.minBytes), C.size_t(cfg.maxBytes), C.size_t(keep))
		if !cfg.overlap {
			turn.Unlock()
		}
		rounds.Add(1)
		time.Sleep(cfg.pause)
	}
}

func leakLoop(cfg config, start time.Time, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	n := 0
	for {
		target := int(time.Since(start).Seconds() * cfg.leakRate)
		for ; n < target; n++ {
			leakyHandler(cfg.leakBytes)
		}
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// procStatus returns one field of /proc/self/status ("VmRSS", "Threads").
func procStatus(field string) string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), field+":") {
			return strings.TrimSpace(strings.TrimPrefix(sc.Text(), field+":"))
		}
	}
	return "?"
}

func main() {
	var cfg config
	flag.IntVar(&cfg.workers, "workers", 8, "churn goroutines, each locked to its own thread (one arena each)")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "how long to run")
	flag.IntVar(&cfg.roundAllocs, "round-allocs", 60000, "C blocks per round once the ramp is over")
	flag.DurationVar(&cfg.ramp, "ramp", 18*time.Second, "time over which rounds grow from -round-allocs/8 to -round-allocs")
	flag.IntVar(&cfg.minBytes, "min-bytes", 64, "smallest churn block")
	flag.IntVar(&cfg.maxBytes, "max-bytes", 512, "largest churn block")
	flag.IntVar(&cfg.survivePct, "survive-pct", 1, "survivors per round, in percent of -round-allocs (a fixed count, so live bytes stay flat during the ramp)")
	flag.IntVar(&cfg.surviveRounds, "survive-rounds", 3, "rounds a survivor lives before it is freed")
	flag.BoolVar(&cfg.overlap, "overlap", false, "let rounds of different workers run at the same time")
	flag.DurationVar(&cfg.pause, "pause", time.Second, "sleep between two rounds of one worker")
	flag.IntVar(&cfg.leakBytes, "leak-bytes", 1024, "bytes per leaked block in main.leakyHandler")
	flag.Float64Var(&cfg.leakRate, "leak-rate", 4, "leaked blocks per second")
	flag.DurationVar(&cfg.rssEvery, "rss-every", 0, "print VmRSS at this interval (0: never)")
	flag.Parse()
	if cfg.workers < 1 || cfg.roundAllocs < 2 || cfg.minBytes < 1 || cfg.maxBytes < cfg.minBytes ||
		cfg.survivePct < 0 || cfg.survivePct > 100 || cfg.roundAllocs*cfg.survivePct/100 < 1 || cfg.surviveRounds < 1 {
		fmt.Fprintln(os.Stderr, "arenachurn: bad flags")
		os.Exit(1)
	}

	startTruth, _ := json.Marshal(map[string]any{
		"workers":            cfg.workers,
		"leak_func":          "main.leakyHandler",
		"leak_bytes_per_sec": float64(cfg.leakBytes) * cfg.leakRate,
		"churn_func":         "churn_round",
		"churn_go_func":      "main.churnWorker",
		"malloc_arena_max":   os.Getenv("MALLOC_ARENA_MAX"),
	})
	fmt.Fprintf(os.Stderr, "arenachurn: truth-start %s\n", startTruth)

	start := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	live := make([][2]int64, cfg.workers)
	for i := 0; i < cfg.workers; i++ {
		wg.Add(1)
		go churnWorker(i, cfg, stop, &wg, &live[i])
	}
	leakDone := make(chan struct{})
	go leakLoop(cfg, start, stop, leakDone)

	if cfg.rssEvery > 0 {
		go func() {
			for {
				time.Sleep(cfg.rssEvery)
				fmt.Fprintf(os.Stderr, "arenachurn: rss t=%.1fs %s\n", time.Since(start).Seconds(), procStatus("VmRSS"))
			}
		}()
	}

	time.Sleep(cfg.duration)
	// Counted before stop: a locked goroutine that returns takes its thread with it.
	threads := procStatus("Threads")
	arenas := int(C.arena_count())
	close(stop)
	wg.Wait()
	<-leakDone

	var liveBytes, liveCount int64
	for _, l := range live {
		liveBytes += l[0]
		liveCount += l[1]
	}
	var arena, inuse, free C.size_t
	C.arena_info(&arena, &inuse, &free)
	// Again with mallinfo: a thread that first mallocs after the count above (an M started
	// while the workers stop) gets an arena of its own.
	arenasEnd := int(C.arena_count())
	truth, _ := json.Marshal(map[string]any{
		"leak_bytes":       leakCount * int64(cfg.leakBytes),
		"leak_count":       leakCount,
		"churn_live_bytes": liveBytes,
		"churn_live_count": liveCount,
		"threads_locked":   cfg.workers,
		"threads":          threads,
		"arenas":           arenas,
		"arenas_end":       arenasEnd,
		"rounds":           rounds.Load(),
		"vmrss":            procStatus("VmRSS"),
		"mallinfo_arena":   uint64(arena),
		"mallinfo_inuse":   uint64(inuse),
		"mallinfo_free":    uint64(free),
		"seconds":          time.Since(start).Seconds(),
	})
	fmt.Fprintf(os.Stderr, "arenachurn: truth %s\n", truth)
}
