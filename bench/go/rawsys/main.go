// Command rawsys is the Go-probe benchmark (issue 10, "Done when 5"): raw system calls in a
// hot loop, timed inside the program, so that the cost of the library's probe on the Go
// runtime's raw system-call entry shows as a throughput ratio.
//
//	rawsys -mode rw   -goroutines 4 -iters 500000 -buf 64
//	    every goroutine loops syscall.Read(/dev/zero) + syscall.Write(/dev/null) of -buf bytes;
//	    prints ops (read and write each count one) per second of wall time and CPU ns per op.
//	rawsys -mode mmap -iters 200000
//	    one goroutine loops syscall.Mmap of one anonymous page + syscall.Munmap; prints ns per
//	    pair (wall and CPU). Under the library with probes on each Mmap is recorded with its
//	    Go stack and each Munmap removes it again.
//
// cgo is enabled (the trivial C function below) so the binary links dynamically and
// LD_PRELOAD reaches it, as it does in the cgo services the probes are for.
package main

/*
static int cgo_ready(void) { return 1; }
*/
import "C"

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

func cpuNs() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

//go:noinline
func readWrite(zero, null int, buf []byte, iters int) {
	for i := 0; i < iters; i++ {
		if n, err := syscall.Read(zero, buf); err != nil || n != len(buf) {
			panic(fmt.Sprint("read ", n, err))
		}
		if n, err := syscall.Write(null, buf); err != nil || n != len(buf) {
			panic(fmt.Sprint("write ", n, err))
		}
	}
}

//go:noinline
func mapUnmap(iters int) {
	page := os.Getpagesize()
	for i := 0; i < iters; i++ {
		b, err := syscall.Mmap(-1, 0, page, syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			panic(err)
		}
		if err := syscall.Munmap(b); err != nil {
			panic(err)
		}
	}
}

func main() {
	mode := flag.String("mode", "rw", "rw or mmap")
	goroutines := flag.Int("goroutines", 4, "goroutines (rw)")
	iters := flag.Int("iters", 500000, "iterations per goroutine (rw: one read + one write each)")
	bufSize := flag.Int("buf", 64, "bytes per read/write")
	flag.Parse()
	if C.cgo_ready() != 1 {
		panic("cgo")
	}
	switch *mode {
	case "rw":
		var ready, done sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < *goroutines; g++ {
			zero, err := syscall.Open("/dev/zero", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				panic(err)
			}
			null, err := syscall.Open("/dev/null", syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				panic(err)
			}
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				buf := make([]byte, *bufSize)
				readWrite(zero, null, buf, 1000) // warm-up
				ready.Done()
				<-start
				readWrite(zero, null, buf, *iters)
			}()
		}
		ready.Wait()
		c0, t0 := cpuNs(), time.Now()
		close(start)
		done.Wait()
		wall, cpu := time.Since(t0), cpuNs()-c0
		ops := 2 * *iters * *goroutines
		fmt.Printf("rawsys: mode=rw goroutines=%d buf=%d ops=%d wall_s=%.4f ops_per_s=%.0f cpu_ns_per_op=%.1f\n",
			*goroutines, *bufSize, ops, wall.Seconds(), float64(ops)/wall.Seconds(), float64(cpu)/float64(ops))
	case "mmap":
		mapUnmap(1000) // warm-up
		c0, t0 := cpuNs(), time.Now()
		mapUnmap(*iters)
		wall, cpu := time.Since(t0), cpuNs()-c0
		fmt.Printf("rawsys: mode=mmap pairs=%d wall_s=%.4f ns_per_pair=%.1f cpu_ns_per_pair=%.1f\n",
			*iters, wall.Seconds(), float64(wall.Nanoseconds())/float64(*iters), float64(cpu)/float64(*iters))
	default:
		fmt.Fprintln(os.Stderr, "rawsys: -mode rw or mmap")
		os.Exit(2)
	}
}
