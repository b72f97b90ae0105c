// Package svc is what the real-library example services (zstdsvc, rocksdbsvc) share: loops
// paced against the clock, so the true rate of every path is known exactly, the truth lines
// they print on stderr, and the flat-out throughput mode used by bench/realsvc.py.
package svc

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Pace calls f(i) for i = 0, 1, ... so that t seconds after start exactly floor(t*rate)
// calls have been made (catching up when late, never running ahead) until d has elapsed, and
// returns the number of calls. A rate ≤ 0 makes no call.
func Pace(start time.Time, d time.Duration, rate float64, f func(i int)) int {
	if rate <= 0 {
		return 0
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		elapsed := time.Since(start)
		last := elapsed >= d
		if last {
			elapsed = d
		}
		for target := int(elapsed.Seconds() * rate); n < target; n++ {
			f(n)
		}
		if last {
			return n
		}
		<-tick.C
	}
}

// Run starts one goroutine per paced path and waits for all of them; counts[i] is how many
// calls path i made.
func Run(d time.Duration, rates []float64, paths []func(int)) (counts []int, elapsed time.Duration) {
	start := time.Now()
	counts = make([]int, len(paths))
	var wg sync.WaitGroup
	for i := range paths {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			counts[i] = Pace(start, d, rates[i], paths[i])
		}(i)
	}
	wg.Wait()
	return counts, time.Since(start)
}

// Truth prints "name: label {json}" on stderr: the ground truth a report is checked against.
func Truth(name, label string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(os.Stderr, "%s: %s %s\n", name, label, b)
}

// Bench runs f(worker, i) n times in total, spread over workers goroutines, as fast as they
// go, and prints one parseable line on stdout:
//
//	name: bench ops=N workers=W seconds=S ops_per_s=X
//
// Only the loop is timed, so a service's set-up (opening a DB, filling it) is not counted.
func Bench(name string, n, workers int, f func(worker, i int)) {
	if workers < 1 {
		workers = 1
	}
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// Worker w takes i = w, w+workers, ...: the same n operations whatever the split.
			for i := w; i < n; i += workers {
				f(w, i)
			}
		}(w)
	}
	wg.Wait()
	s := time.Since(start).Seconds()
	fmt.Printf("%s: bench ops=%d workers=%d seconds=%.6f ops_per_s=%.1f\n", name, n, workers, s, float64(n)/s)
}
