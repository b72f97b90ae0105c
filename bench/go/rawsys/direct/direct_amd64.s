#include "textflag.h"

// func Getpid() uintptr
TEXT ·Getpid(SB),NOSPLIT,$0-8
	MOVQ	$39, AX // SYS_getpid
	SYSCALL
	MOVQ	AX, ret+0(FP)
	RET

// func Mmap(length uintptr) uintptr
TEXT ·Mmap(SB),NOSPLIT,$0-16
	MOVQ	$0, DI            // addr
	MOVQ	length+0(FP), SI
	MOVQ	$3, DX            // PROT_READ|PROT_WRITE
	MOVQ	$0x22, R10        // MAP_PRIVATE|MAP_ANONYMOUS
	MOVQ	$-1, R8           // fd
	MOVQ	$0, R9            // offset
	MOVQ	$9, AX            // SYS_mmap
	SYSCALL
	MOVQ	AX, ret+8(FP)
	RET

// func Munmap(addr, length uintptr) uintptr
TEXT ·Munmap(SB),NOSPLIT,$0-24
	MOVQ	addr+0(FP), DI
	MOVQ	length+8(FP), SI
	MOVQ	$11, AX           // SYS_munmap
	SYSCALL
	MOVQ	AX, ret+16(FP)
	RET
