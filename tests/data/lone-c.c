/* A plain C program with no libc and no image note, run alone by tests/test_lone.py.
 * Built once (the ELF is committed, so tests need no compiler) with gcc 12.2 (Debian):
 *   gcc -static -nostdlib -O0 -fno-pie -no-pie -o lone-c.elf lone-c.c
 * It uses the stack at once (-O0 pushes rbp first), recurses, and exits 0 if all went well. */
static void sys_exit(long code) { __asm__ volatile("syscall" ::"a"(9), "D"(code)); for (;;) {} }
static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
void _start(void) { volatile char buf[4096]; buf[0] = 1; sys_exit(fib(15) == 610 && buf[0] == 1 ? 0 : 1); }
