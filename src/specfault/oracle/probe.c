/*
 * probe.c -- fault-tolerant memory touches for the oracle's host runner.
 *
 * A touch that faults must be *observed* (signal, si_code, si_addr) and must
 * leave the touching process alive, because the process owns the mappings
 * under test.  Python cannot survive a SIGSEGV raised inside a ctypes call,
 * so the three probes below run in C under a SIGSEGV/SIGBUS handler that
 * siglongjmp()s back out.
 *
 *   probe_read(addr, out, n)   byte loads; 0 on success, else -1
 *   probe_write(addr, in, n)   byte stores; 0 on success, else -1
 *   probe_exec(addr)           instruction fetch at addr; 0 if the fetch
 *                              succeeded, -1 if it faulted
 *   probe_last(&sig, &code, &addr)  the signal that ended the last probe
 *
 * probe_exec must not let the bytes at addr do anything.  It zeroes every
 * general register (so any memory operand lands near address 0 and faults
 * harmlessly), sets EFLAGS.TF (so at most one instruction runs before a
 * SIGTRAP), and jumps.  Arrival at addr is the SIGTRAP whose RIP is addr;
 * after that, a SIGSEGV/SIGBUS whose si_addr is addr is a fetch fault, and
 * anything else (SIGTRAP elsewhere, SIGILL, a data fault near 0) means the
 * fetch succeeded.  Handlers run on an alternate stack since RSP is zero.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

static sigjmp_buf probe_jb;
static volatile sig_atomic_t probe_active;   /* 1: a probe is running */
static volatile sig_atomic_t exec_state;     /* 0 no exec probe, 1 stepping, 2 arrived */
static volatile int last_sig, last_code;
static volatile uintptr_t last_addr;
__attribute__((visibility("hidden"), used)) void *volatile probe_exec_target;
static char altstack[1 << 16];

static void probe_handler(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	uintptr_t rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
	uintptr_t target = (uintptr_t)probe_exec_target;

	if (!probe_active) {            /* a real crash: die as usual */
		signal(sig, SIG_DFL);
		return;
	}
	if (exec_state) {
		if (sig == SIGTRAP && rip == target && exec_state == 1) {
			exec_state = 2;         /* next instruction is the one at target */
			return;
		}
		if (sig == SIGTRAP && exec_state == 1)
			return;                 /* still stepping towards the jump */
		if ((sig == SIGSEGV || sig == SIGBUS) && (uintptr_t)si->si_addr == target) {
			last_sig = sig;         /* the fetch itself faulted */
			last_code = si->si_code;
			last_addr = (uintptr_t)si->si_addr;
			siglongjmp(probe_jb, 1);
		}
		last_sig = 0;               /* fetched: whatever happened next is harmless */
		last_code = 0;
		last_addr = 0;
		siglongjmp(probe_jb, 2);
	}
	last_sig = sig;
	last_code = si->si_code;
	last_addr = (uintptr_t)si->si_addr;
	siglongjmp(probe_jb, 1);
}

int probe_install(void)
{
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0 };
	struct sigaction sa;
	int sigs[] = { SIGSEGV, SIGBUS, SIGTRAP, SIGILL, SIGFPE };

	if (sigaltstack(&ss, NULL))
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = probe_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL))
			return -1;
	return 0;
}

void probe_last(int *sig, int *code, uintptr_t *addr)
{
	*sig = last_sig;
	*code = last_code;
	*addr = last_addr;
}

int probe_read(const volatile unsigned char *addr, unsigned char *out, size_t n)
{
	last_sig = 0;
	if (sigsetjmp(probe_jb, 1)) {
		probe_active = 0;
		return -1;
	}
	probe_active = 1;
	for (size_t i = 0; i < n; i++)
		out[i] = addr[i];
	probe_active = 0;
	return 0;
}

int probe_write(volatile unsigned char *addr, const unsigned char *in, size_t n)
{
	last_sig = 0;
	if (sigsetjmp(probe_jb, 1)) {
		probe_active = 0;
		return -1;
	}
	probe_active = 1;
	for (size_t i = 0; i < n; i++)
		addr[i] = in[i];
	probe_active = 0;
	return 0;
}

int probe_exec(void *addr)
{
	int r;

	last_sig = 0;
	probe_exec_target = addr;
	r = sigsetjmp(probe_jb, 1);
	if (r) {
		probe_active = 0;
		exec_state = 0;
		return r == 2 ? 0 : -1;
	}
	probe_active = 1;
	exec_state = 1;
	__asm__ volatile(
		"pushfq\n\t"
		"orq $0x100, (%%rsp)\n\t"
		"popfq\n\t"
		"xorl %%eax, %%eax\n\t"
		"xorl %%ebx, %%ebx\n\t"
		"xorl %%ecx, %%ecx\n\t"
		"xorl %%edx, %%edx\n\t"
		"xorl %%esi, %%esi\n\t"
		"xorl %%edi, %%edi\n\t"
		"xorl %%r8d, %%r8d\n\t"
		"xorl %%r9d, %%r9d\n\t"
		"xorl %%r10d, %%r10d\n\t"
		"xorl %%r11d, %%r11d\n\t"
		"xorl %%r12d, %%r12d\n\t"
		"xorl %%r13d, %%r13d\n\t"
		"xorl %%r14d, %%r14d\n\t"
		"xorl %%r15d, %%r15d\n\t"
		"xorl %%ebp, %%ebp\n\t"
		"xorl %%esp, %%esp\n\t"
		"jmp *probe_exec_target(%%rip)\n\t"
		::: "memory");
	__builtin_unreachable();
}
