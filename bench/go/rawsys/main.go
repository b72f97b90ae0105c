// Command rawsys is the Go-probe benchmark (issue 10, "Done when 5"): raw system calls in a
// hot loop, timed inside the program, so that the cost of the library's probe on the Go
// runtime's raw system-call entry shows as a throughput ratio.
//
//	rawsys -mode rw   -goroutines 4 -iters 500000 -buf 64
//	    every goroutine loops syscall.Read(/dev/zero) + syscall.Write(/dev/null) of -buf bytes;
//	    prints ops (read and write each count one) per second of wall time and CPU ns per op.
//	rawsys -mode entry -iters 200000 -blocks 200
//	    the cost of one pass through the runtime's raw system-call entry (where the probe
//	    sits): blocks of -iters getpid calls through syscall.RawSyscall (which goes through the
//	    entry), alternating with blocks of getpid by a SYSCALL instruction of our own (package
//	    direct, which does not); prints the median over blocks of the per-call difference.
//	    Both kinds run in the same process, interleaved, so load on the machine cancels out;
//	    the probe's own cost is this figure with probes on minus the same with probes off.
//	rawsys -mode mapentry -iters 2000 -blocks 100
//	    the same pairing for one-page mmap + munmap: through the entry (syscall.RawSyscall6,
//	    where the probe records the mapping with its Go stack and removes it again) against
//	    the bare instructions; probes on minus probes off is the capture's cost per pair.
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
	"sort"
	"sync"
	"syscall"
	"time"

	"offheap.bench/go/rawsys/direct"
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

//go:noinline
func viaEntry(iters int) uintptr {
	var sum uintptr
	for i := 0; i < iters; i++ {
		pid, _, _ := syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
		sum += pid
	}
	return sum
}

//go:noinline
func viaDirect(iters int) uintptr {
	var sum uintptr
	for i := 0; i < iters; i++ {
		sum += direct.Getpid()
	}
	return sum
}

//go:noinline
func mapViaEntry(iters int) {
	page := uintptr(os.Getpagesize())
	for i := 0; i < iters; i++ {
		addr, _, errno := syscall.RawSyscall6(syscall.SYS_MMAP, 0, page, syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_ANON|syscall.MAP_PRIVATE, ^uintptr(0), 0)
		if errno != 0 {
			panic(errno)
		}
		if _, _, errno := syscall.RawSyscall(syscall.SYS_MUNMAP, addr, page, 0); errno != 0 {
			panic(errno)
		}
	}
}

//go:noinline
func mapDirect(iters int) {
	page := uintptr(os.Getpagesize())
	for i := 0; i < iters; i++ {
		addr := direct.Mmap(page)
		if addr > ^uintptr(4095) {
			panic("mmap")
		}
		if direct.Munmap(addr, page) != 0 {
			panic("munmap")
		}
	}
}

// pair times blocks of a and b alternately: medians of ns per iteration of each and of
// their difference.
func pair(a, b func(int), iters, blocks int) (float64, float64, float64) {
	var as, bs, diff []float64
	for k := 0; k < blocks; k++ {
		t0 := time.Now()
		a(iters)
		t1 := time.Now()
		b(iters)
		t2 := time.Now()
		x := float64(t1.Sub(t0).Nanoseconds()) / float64(iters)
		y := float64(t2.Sub(t1).Nanoseconds()) / float64(iters)
		as, bs, diff = append(as, x), append(bs, y), append(diff, x-y)
	}
	return median(as), median(bs), median(diff)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func main() {
	mode := flag.String("mode", "rw", "rw or mmap")
	goroutines := flag.Int("goroutines", 4, "goroutines (rw)")
	iters := flag.Int("iters", 500000, "iterations per goroutine (rw: one read + one write each)")
	bufSize := flag.Int("buf", 64, "bytes per read/write")
	blocks := flag.Int("blocks", 200, "blocks of each kind (entry)")
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
	case "entry":
		viaEntry(10000) // warm-up
		viaDirect(10000)
		if viaEntry(1) != viaDirect(1) {
			panic("getpid differs")
		}
		e, d, diff := pair(func(n int) { viaEntry(n) }, func(n int) { viaDirect(n) }, *iters, *blocks)
		fmt.Printf("rawsys: mode=entry blocks=%d iters=%d entry_ns=%.2f direct_ns=%.2f entry_minus_direct_ns=%.2f\n",
			*blocks, *iters, e, d, diff)
	case "mapentry":
		mapViaEntry(1000) // warm-up
		mapDirect(1000)
		e, d, diff := pair(mapViaEntry, mapDirect, *iters, *blocks)
		fmt.Printf("rawsys: mode=mapentry blocks=%d iters=%d entry_ns=%.1f direct_ns=%.1f entry_minus_direct_ns=%.1f\n",
			*blocks, *iters, e, d, diff)
	case "mmap":
		mapUnmap(1000) // warm-up
		c0, t0 := cpuNs(), time.Now()
		mapUnmap(*iters)
		wall, cpu := time.Since(t0), cpuNs()-c0
		fmt.Printf("rawsys: mode=mmap pairs=%d wall_s=%.4f ns_per_pair=%.1f cpu_ns_per_pair=%.1f\n",
			*iters, wall.Seconds(), float64(wall.Nanoseconds())/float64(*iters), float64(cpu)/float64(*iters))
	default:
		fmt.Fprintln(os.Stderr, "rawsys: -mode rw, entry, mapentry or mmap")
		os.Exit(2)
	}
}
