/*
 * The seed's case on the host kernel: one thread faults in an anonymous
 * region while another maps and unmaps (an mmap writer).  Run inside a
 * memory cgroup whose limit is below the region, with swap, the faults
 * enter direct reclaim; the writer's latency shows whether the faults hold
 * it up (on this kernel, faults take per-VMA locks, not mmap_lock).
 *
 *     pressure_host REGION_PAGES PASSES WRITER_MAX
 *
 * The faulter writes one byte per page, PASSES times over the region, and
 * times every store.  The writer loops mmap(16 pages) + munmap until the
 * faulter is done (at most WRITER_MAX times), timing each pair.  Prints one
 * JSON line of percentiles.  Built and run by bench_pressure_host.py.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static long region_pages, passes, writer_max;
static atomic_int done;
static long *touch_ns, ntouch;

static long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return (x > y) - (x < y);
}

static void *faulter(void *arg)
{
	char *r = mmap(NULL, region_pages * 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	(void)arg;
	if (r == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	for (long p = 0; p < passes; p++)
		for (long i = 0; i < region_pages; i++) {
			long t0 = now_ns();

			r[i * 4096] = (char)(p + 1);
			touch_ns[ntouch++] = now_ns() - t0;
		}
	munmap(r, region_pages * 4096);
	atomic_store(&done, 1);
	return NULL;
}

static long pct(const long *v, long n, int p)
{
	return n ? v[(n - 1) * p / 100] : 0;
}

int main(int argc, char **argv)
{
	pthread_t t;
	long *writer_ns, n = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: %s REGION_PAGES PASSES WRITER_MAX\n", argv[0]);
		return 2;
	}
	region_pages = atol(argv[1]);
	passes = atol(argv[2]);
	writer_max = atol(argv[3]);
	touch_ns = calloc(region_pages * passes, sizeof(long));
	writer_ns = calloc(writer_max, sizeof(long));
	if (!touch_ns || !writer_ns)
		return 1;
	pthread_create(&t, NULL, faulter, NULL);
	while (n < writer_max && !atomic_load(&done)) {
		long t0 = now_ns();
		void *m = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		munmap(m, 16 * 4096);
		writer_ns[n++] = now_ns() - t0;
	}
	pthread_join(t, NULL);
	qsort(writer_ns, n, sizeof(long), cmp);
	qsort(touch_ns, ntouch, sizeof(long), cmp);
	printf("{\"writer_n\": %ld, \"writer_p50_ns\": %ld, \"writer_p99_ns\": %ld, "
	       "\"touches\": %ld, \"touch_p50_ns\": %ld, \"touch_p99_ns\": %ld}\n",
	       n, pct(writer_ns, n, 50), pct(writer_ns, n, 99),
	       ntouch, pct(touch_ns, ntouch, 50), pct(touch_ns, ntouch, 99));
	return 0;
}
