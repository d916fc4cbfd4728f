/*
 * mtmap: threads that map, fault and unmap memory at the same time — the
 * shape of an application starting up (tests/trace_corpus/README.md).
 *
 * THREADS threads each run ROUNDS rounds of: mmap an anonymous region,
 * write-fault every page, mprotect half of it read-only, read-fault a
 * private file mapping of this program, munmap both.  Thread 0 also grows
 * the heap with brk and its stack with a deep recursion; the main thread
 * grows a MAP_GROWSDOWN region by a fault below it (above a PROT_NONE
 * reservation, which keeps no guard gap), and survives one SIGSEGV (a
 * read of a page no VMA covers).
 *
 *   cc -O1 -pthread -o mtmap mtmap.c && ./mtmap
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 8
#define PAGES 16
#define PAGE 4096

static int self_fd;
static sigjmp_buf jump;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(jump, 1);
}

static int deep(int n)
{
	volatile char buf[2048];

	buf[0] = (char)n;
	return n ? deep(n - 1) + buf[0] : 0;
}

static void *worker(void *arg)
{
	long id = (long)arg;
	volatile char sink = 0;

	for (int r = 0; r < ROUNDS; r++) {
		char *a = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		char *f = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE, self_fd, 0);

		if (a == MAP_FAILED || f == MAP_FAILED)
			return (void *)1;
		for (int i = 0; i < PAGES; i++)
			a[i * PAGE] = (char)(id + r);
		mprotect(a, PAGES / 2 * PAGE, PROT_READ);
		sink += f[0] + f[PAGE] + a[0];
		munmap(f, 2 * PAGE);
		munmap(a, PAGES * PAGE);
	}
	if (id == 0) {
		char *top = sbrk(0);

		if (brk(top + 8 * PAGE) == 0)
			memset(top, 1, 8 * PAGE);
		sink += (char)deep(64);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[THREADS];
	char *stack, *below, *resv;
	volatile char c;

	(void)argc;
	self_fd = open(argv[0], O_RDONLY);
	if (self_fd < 0)
		return 1;
	for (long i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	/* a growsdown region, grown by a fault below it: 4 MiB reserved, the
	 * top half unmapped, the region at its very top */
	resv = mmap(NULL, 4 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (resv == MAP_FAILED)
		return 1;
	munmap(resv + (2 << 20), 2 << 20);
	stack = mmap(resv + (4 << 20) - 4 * PAGE, 4 * PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED, -1, 0);
	if (stack == MAP_FAILED)
		return 1;
	stack[-2 * PAGE] = 1;
	/* one SIGSEGV, survived: a page no VMA covers */
	below = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(below, PAGE);
	signal(SIGSEGV, on_segv);
	if (!sigsetjmp(jump, 1))
		c = *below;
	(void)c;
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	puts("mtmap: done");
	return 0;
}
