/* Test helper of agent/tests/lab/privileged.sh: prints the credentials it runs with, so a
 * setuid, setgid or file-capability copy of it shows what exec gave it. Built statically in
 * the lab (it goes into a test image with no libc of its own). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
	char line[256];
	FILE *status = fopen("/proc/self/status", "r");

	printf("Effective uid: %u\n", (unsigned)geteuid());
	printf("Effective gid: %u\n", (unsigned)getegid());
	while (status && fgets(line, sizeof line, status))
		if (strncmp(line, "CapEff:", 7) == 0)
			fputs(line, stdout);
	return 0;
}
