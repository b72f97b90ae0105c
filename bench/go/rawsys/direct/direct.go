// Package direct makes a system call without the Go runtime's raw system-call entry (the
// function the library's Go probe patches), so that rawsys can time the entry's cost, probe
// included, against the bare instruction in the same process.
package direct

// Getpid is getpid(2) by a SYSCALL instruction of its own (direct_amd64.s).
func Getpid() uintptr

// Mmap maps length bytes of anonymous private read-write memory by a SYSCALL instruction of
// its own; it returns the address, or -errno.
func Mmap(length uintptr) uintptr

// Munmap unmaps by a SYSCALL instruction of its own; it returns 0 or -errno.
func Munmap(addr, length uintptr) uintptr
