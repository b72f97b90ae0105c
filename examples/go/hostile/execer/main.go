// Command execer starts children with os/exec from many goroutines while other goroutines
// churn the C allocator (issue 7). os/exec forks with a raw clone(CLONE_VFORK|CLONE_VM):
// the child runs raw system calls only, no pthread_atfork handler runs, and it inherits
// LD_PRELOAD, so every exec'd child is tracked as a process of its own.
//
// usage: execer -child PATH [-n N] [-parallel P]
// runs PATH leaf <i> for i in 0..N-1, P at a time, and checks each child printed
// "leaf <i>" and exited 0. stdout (deterministic):
//
//	execer: children=N ok=N
//
// and one "pid leaf <pid>" line per child on stderr.
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
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

func main() {
	child := flag.String("child", "", "program to run as `PATH leaf <i>`")
	n := flag.Int("n", 40, "children")
	parallel := flag.Int("parallel", 8, "children started at once")
	flag.Parse()

	var stop atomic.Bool
	var churn sync.WaitGroup
	for g := 0; g < 4; g++ {
		churn.Add(1)
		go func(g int) {
			defer churn.Done()
			for i := 0; !stop.Load(); i++ {
				size := C.size_t(1 + (g*131+i*17)%20000)
				p := C.malloc(size)
				C.memset(p, C.int(i), size)
				C.free(p)
				s := C.CString(strings.Repeat("x", i%100))
				C.free(unsafe.Pointer(s))
			}
		}(g)
	}

	var ok atomic.Int64
	var mu sync.Mutex
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			cmd := exec.Command(*child, "leaf", strconv.Itoa(i))
			out, err := cmd.Output()
			mu.Lock()
			fmt.Fprintf(os.Stderr, "pid leaf %d\n", cmd.Process.Pid)
			mu.Unlock()
			if err == nil && string(out) == fmt.Sprintf("leaf %d\n", i) {
				ok.Add(1)
			}
		}(i)
	}
	wg.Wait()
	stop.Store(true)
	churn.Wait()
	fmt.Printf("execer: children=%d ok=%d\n", *n, ok.Load())
	if ok.Load() != int64(*n) {
		os.Exit(1)
	}
}
