// Command threadleak is a cgo service that leaks threads (issue 11 "Done
// when 3"): main.startWorker calls the preamble's start_detached_worker,
// which starts a detached pthread that blocks forever and is never joined,
// -leak-rate times per second. Next to it, main.runJoinedWorker starts a
// pthread through run_joined_worker that does a little work and is joined:
// the correct path, -joined-rate times per second, leaving nothing.
//
// Truth on stderr, prefixed "threadleak: ", at start
//
//	threadleak: truth-start {"leak_func":"main.startWorker","leak_threads_per_sec":2,...}
//
// and after -duration (or, with -wait-stdin, once stdin closes)
//
//	threadleak: truth {"leaked_threads":N,"joined_threads":M,"threads_now":"T",...}
//
// where leaked_threads is the number of blocked threads still alive and
// threads_now the Threads line of /proc/self/status at that moment.
package main

/*
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Never signalled: every leaked thread waits here for good.
static pthread_mutex_t forever_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t forever_cv = PTHREAD_COND_INITIALIZER;

static void *blocked_forever(void *arg) {
	(void)arg;
	pthread_mutex_lock(&forever_mu);
	for (;;) pthread_cond_wait(&forever_cv, &forever_mu);
	return NULL;
}

// The bug on purpose: detached, blocking, nobody keeps a handle to stop it.
__attribute__((noinline)) static int start_detached_worker(void) {
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int rc = pthread_create(&t, &a, blocked_forever, NULL);
	pthread_attr_destroy(&a);
	return rc;
}

static void *short_job(void *arg) {
	char buf[256];
	memset(buf, (int)(size_t)arg, sizeof buf);
	return (void *)(size_t)buf[17];
}

__attribute__((noinline)) static int run_joined_worker(int v) {
	pthread_t t;
	int rc = pthread_create(&t, NULL, short_job, (void *)(size_t)v);
	if (rc != 0) return rc;
	void *out;
	return pthread_join(t, &out);
}
*/
import "C"

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

var (
	leaked int64 // written by leakLoop only
	joined int64 // written by joinLoop only
)

//go:noinline
func startWorker() {
	if rc := C.start_detached_worker(); rc != 0 {
		fmt.Fprintf(os.Stderr, "threadleak: pthread_create: %d\n", int(rc))
		os.Exit(1)
	}
	leaked++
}

//go:noinline
func runJoinedWorker(i int) {
	if rc := C.run_joined_worker(C.int(i)); rc != 0 {
		fmt.Fprintf(os.Stderr, "threadleak: joined worker: %d\n", int(rc))
		os.Exit(1)
	}
	joined++
}

// pace runs f floor(t*rate) times by time t (catching up when late) until
// stop closes or d has passed (d > 0).
func pace(start time.Time, d time.Duration, rate float64, stop <-chan struct{}, f func(int)) {
	if rate <= 0 {
		return
	}
	n := 0
	for {
		elapsed := time.Since(start)
		if d > 0 && elapsed > d {
			elapsed = d
		}
		for target := int(elapsed.Seconds() * rate); n < target; n++ {
			f(n)
		}
		if d > 0 && elapsed >= d {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func threadsNow() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Threads:") {
			return strings.TrimSpace(strings.TrimPrefix(sc.Text(), "Threads:"))
		}
	}
	return "?"
}

func main() {
	duration := flag.Duration("duration", 20*time.Second, "how long to run (ignored with -wait-stdin)")
	leakRate := flag.Float64("leak-rate", 2, "leaked threads per second (main.startWorker)")
	joinedRate := flag.Float64("joined-rate", 20, "started-and-joined threads per second (main.runJoinedWorker)")
	waitStdin := flag.Bool("wait-stdin", false, "run until stdin closes instead of -duration")
	flag.Parse()

	start, _ := json.Marshal(map[string]any{
		"leak_func":              "main.startWorker",
		"leak_c_func":            "start_detached_worker",
		"leak_threads_per_sec":   *leakRate,
		"joined_func":            "main.runJoinedWorker",
		"joined_threads_per_sec": *joinedRate,
		"threads_at_start":       threadsNow(),
	})
	fmt.Fprintf(os.Stderr, "threadleak: truth-start %s\n", start)

	d := *duration
	stop := make(chan struct{})
	if *waitStdin {
		d = 0
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stop)
		}()
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pace(t0, d, *leakRate, stop, func(int) { startWorker() }) }()
	go func() { defer wg.Done(); pace(t0, d, *joinedRate, stop, runJoinedWorker) }()
	wg.Wait()

	truth, _ := json.Marshal(map[string]any{
		"leaked_threads": leaked,
		"joined_threads": joined,
		"threads_now":    threadsNow(),
		"seconds":        time.Since(t0).Seconds(),
	})
	fmt.Fprintf(os.Stderr, "threadleak: truth %s\n", truth)
}
