/* tap.c - see tap.h. */
#include "tap.h"

bool tap_failed;

void tap_print_bytes(const char *label, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t shown = n < 64 ? n : 64;

	printf("#   %s (%zu bytes): \"", label, n);
	for (size_t i = 0; i < shown; i++) {
		if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' && b[i] != '\\')
			putchar(b[i]);
		else
			printf("\\x%02x", b[i]);
	}
	printf("%s\"\n", shown < n ? "..." : "");
}

int tap_run(const char *prefix, const struct tap_case *cases, size_t n)
{
	size_t failed = 0;

	printf("1..%zu\n", n);
	fflush(stdout);
	for (size_t i = 0; i < n; i++) {
		tap_failed = false;
		cases[i].fn();
		printf("%s %zu - %s%s%s\n", tap_failed ? "not ok" : "ok", i + 1,
		       prefix ? prefix : "", prefix ? "/" : "", cases[i].name);
		fflush(stdout);
		failed += tap_failed;
	}
	return failed ? 1 : 0;
}
