/* A minimal multiboot (v1) kernel that keeps its vCPU busy: a countdown loop, then one
 * `out` to port 0x80 (a KVM exit to userspace), forever. Used by the root integration
 * tests, because a PXE-booting guest sleeps most of the time (see TESTBED.md).
 * ITERATIONS is set with `as --defsym ITERATIONS=N`; fewer iterations, more exits. */
.ifndef ITERATIONS
.set ITERATIONS, 2000
.endif
.set MB_MAGIC, 0x1BADB002
.set MB_FLAGS, 0x00010000           /* bit 16: the address fields below are valid (a.out kludge) */
        .text
        .code32
        .globl _start
        .align 4
header:
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
        .long header                /* header_addr */
        .long header                /* load_addr: load the image from the header on */
        .long 0                     /* load_end_addr: 0 = to the end of the file */
        .long 0                     /* bss_end_addr: 0 = no bss */
        .long _start                /* entry_addr */
_start: cli
spin:   mov $ITERATIONS, %ecx
1:      dec %ecx
        jnz 1b
        out %al, $0x80
        jmp spin
