// Command rawmmap is a cgo service whose memory is mapped through raw Go
// system calls that no LD_PRELOAD hook sees (issue 10 "Done when 1-3"), next
// to one C.CString leak that libc does see.
//
// Each iteration calls, once each:
//
//	main.mapViaSyscall  syscall.Mmap of -syscall-bytes, kept
//	main.mapThenTrim    unix.Mmap of -trim-bytes, then a raw
//	                    syscall.Syscall(SYS_MUNMAP) of everything after the
//	                    first -trim-keep bytes (page-rounded): the head stays
//	main.growViaMremap  unix.Mmap of -grow-from bytes grown by unix.Mremap
//	                    (MREMAP_MAYMOVE) to -grow-to bytes, kept
//	main.mapAndRelease  syscall.Mmap + syscall.Munmap and unix.Mmap +
//	                    unix.Munmap: leaves nothing
//	main.leakCString    C.CString of -cstring-bytes bytes (NUL included), kept
//
// How it ends (-mode): exit = os.Exit(3) after -iterations; return = return
// from main (status 0); panic = an unrecovered panic (status 2); signal =
// print "ready" on stdout and block until SIGTERM/SIGINT kills it (no
// signal.Notify: the runtime's default death path); long = paced work for
// -duration (0: until killed): -syscall-rate syscall.Mmap calls/s of
// -long-bytes (default 16 x 64 KiB = 1 MiB/s) and -cstring-rate C.CString
// calls/s of -cstring-bytes (default 8 x 256 B = 2 KiB/s), then return.
//
// Truth, on stderr, one JSON line per function prefixed "rawmmap: truth ",
// written just before the ending (for signal mode before "ready"; for long
// mode with -duration 0 only the rates line at start is printed):
//
//	rawmmap: truth {"func":"main.mapViaSyscall","via":"syscall","bytes":N,"count":K}
//
// bytes are what the kernel holds: mappings are counted in whole pages,
// C strings in requested bytes. Long mode also prints at start
//
//	rawmmap: rates {"main.mapViaSyscall":B,"main.leakCString":B} (bytes/s)
//
// Page contents are written so the memory is resident (RSS ledger tests).
package main

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type site struct {
	Func  string `json:"func"`
	Via   string `json:"via"`
	Bytes int64  `json:"bytes"`
	Count int64  `json:"count"`
}

var (
	pageSize = int64(os.Getpagesize())

	viaSyscall = site{Func: "main.mapViaSyscall", Via: "syscall"}
	trimmed    = site{Func: "main.mapThenTrim", Via: "syscall"}
	grown      = site{Func: "main.growViaMremap", Via: "syscall"}
	released   = site{Func: "main.mapAndRelease", Via: "syscall"}
	cstrings   = site{Func: "main.leakCString", Via: "libc"}

	// Kept so nothing looks unreachable; Go's GC never frees a mapping anyway.
	keep    [][]byte
	keepPtr []unsafe.Pointer
)

func pages(n int64) int64 { return (n + pageSize - 1) / pageSize * pageSize }

func touch(b []byte) {
	for i := 0; i < len(b); i += int(pageSize) {
		b[i] = 1
	}
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "rawmmap: %s: %v\n", what, err)
		os.Exit(1)
	}
}

const anonRW = syscall.MAP_ANON | syscall.MAP_PRIVATE

//go:noinline
func mapViaSyscall(n int) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, anonRW)
	must(err, "syscall.Mmap")
	touch(b)
	keep = append(keep, b)
	viaSyscall.Bytes += pages(int64(n))
	viaSyscall.Count++
}

//go:noinline
func mapThenTrim(n, keepBytes int) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, anonRW)
	must(err, "unix.Mmap")
	touch(b)
	head := pages(int64(keepBytes))
	addr := uintptr(unsafe.Pointer(&b[0]))
	// The raw call bypasses unix.Munmap's bookkeeping on purpose: that is the
	// path a tracker has to see at the system-call level.
	_, _, e := syscall.Syscall(syscall.SYS_MUNMAP, addr+uintptr(head), uintptr(pages(int64(n))-head), 0)
	if e != 0 {
		must(e, "munmap")
	}
	keep = append(keep, b[:head])
	trimmed.Bytes += head
	trimmed.Count++
}

//go:noinline
func growViaMremap(from, to int) {
	b, err := unix.Mmap(-1, 0, from, unix.PROT_READ|unix.PROT_WRITE, anonRW)
	must(err, "unix.Mmap")
	touch(b)
	nb, err := unix.Mremap(b, to, unix.MREMAP_MAYMOVE)
	must(err, "unix.Mremap")
	touch(nb)
	keep = append(keep, nb)
	grown.Bytes += pages(int64(to))
	grown.Count++
}

//go:noinline
func mapAndRelease(n int) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, anonRW)
	must(err, "syscall.Mmap")
	touch(b)
	must(syscall.Munmap(b), "syscall.Munmap")
	u, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, anonRW)
	must(err, "unix.Mmap")
	touch(u)
	must(unix.Munmap(u), "unix.Munmap")
}

//go:noinline
func leakCString(n int) {
	cs := C.CString(strings.Repeat("s", n-1)) // n-1 chars + NUL = n bytes
	C.memset(unsafe.Pointer(cs), 'c', C.size_t(n-1))
	// Bug on purpose: never C.free'd.
	keepPtr = append(keepPtr, unsafe.Pointer(cs))
	cstrings.Bytes += int64(n)
	cstrings.Count++
}

func printTruth() {
	for _, s := range []site{viaSyscall, trimmed, grown, released, cstrings} {
		j, _ := json.Marshal(s)
		fmt.Fprintf(os.Stderr, "rawmmap: truth %s\n", j)
	}
}

// pace runs f floor(t*rate) times by time t, catching up when late, so the
// true rate is exact whatever the scheduling.
func pace(start time.Time, d time.Duration, rate float64, f func()) {
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
			f()
		}
		if d > 0 && elapsed >= d {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func main() {
	mode := flag.String("mode", "exit", "how to end: exit (status 3), return (0), panic (2), signal (wait for SIGTERM/SIGINT), long")
	iterations := flag.Int("iterations", 8, "iterations of every path (modes exit, return, panic, signal)")
	syscallBytes := flag.Int("syscall-bytes", 100000, "bytes per syscall.Mmap in main.mapViaSyscall")
	trimBytes := flag.Int("trim-bytes", 256<<10, "bytes per unix.Mmap in main.mapThenTrim")
	trimKeep := flag.Int("trim-keep", 40000, "bytes left mapped by main.mapThenTrim (page-rounded)")
	growFrom := flag.Int("grow-from", 64<<10, "bytes mapped by main.growViaMremap before the mremap")
	growTo := flag.Int("grow-to", 300000, "bytes after the mremap in main.growViaMremap")
	releaseBytes := flag.Int("release-bytes", 128<<10, "bytes per mapping in main.mapAndRelease")
	cstringBytes := flag.Int("cstring-bytes", 256, "bytes per C.CString in main.leakCString, NUL included")
	duration := flag.Duration("duration", 30*time.Second, "long mode: how long to run (0: until killed)")
	longBytes := flag.Int("long-bytes", 64<<10, "long mode: bytes per syscall.Mmap in main.mapViaSyscall")
	syscallRate := flag.Float64("syscall-rate", 16, "long mode: main.mapViaSyscall calls per second")
	cstringRate := flag.Float64("cstring-rate", 8, "long mode: main.leakCString calls per second")
	flag.Parse()
	if *trimKeep <= 0 || int64(*trimKeep) >= pages(int64(*trimBytes)) || *growTo <= *growFrom || *cstringBytes < 1 {
		fmt.Fprintln(os.Stderr, "rawmmap: need 0 < -trim-keep < -trim-bytes, -grow-to > -grow-from, -cstring-bytes >= 1")
		os.Exit(1)
	}

	if *mode == "long" {
		rates, _ := json.Marshal(map[string]float64{
			viaSyscall.Func: float64(pages(int64(*longBytes))) * *syscallRate,
			cstrings.Func:   float64(*cstringBytes) * *cstringRate,
		})
		fmt.Fprintf(os.Stderr, "rawmmap: rates %s\n", rates)
		start := time.Now()
		done := make(chan struct{})
		go func() {
			pace(start, *duration, *cstringRate, func() { leakCString(*cstringBytes) })
			close(done)
		}()
		pace(start, *duration, *syscallRate, func() { mapViaSyscall(*longBytes) })
		<-done
		printTruth()
		return
	}

	for i := 0; i < *iterations; i++ {
		mapViaSyscall(*syscallBytes)
		mapThenTrim(*trimBytes, *trimKeep)
		growViaMremap(*growFrom, *growTo)
		mapAndRelease(*releaseBytes)
		leakCString(*cstringBytes)
	}
	printTruth()

	switch *mode {
	case "exit":
		os.Exit(3)
	case "return":
		return
	case "panic":
		panic(fmt.Sprintf("rawmmap: panic after %d iterations", *iterations))
	case "signal":
		fmt.Println("ready")
		// A sleeping timer, not select{}: with no timer pending the
		// runtime would call this a deadlock and exit 2.
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Fprintf(os.Stderr, "rawmmap: unknown -mode %q\n", *mode)
		os.Exit(1)
	}
}
