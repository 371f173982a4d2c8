/*
 * Stand-in nvidia-persistenced for provision's VM tests: keeps
 * /dev/nvidiactl and /dev/nvidia0 open (so the module is in use while it
 * runs, as with the real daemon), refuses to start against a kernel module
 * of another release (as the real one does: the RM API must match), and
 * records whether it runs in persistence mode.
 *
 *   nvidia-persistenced [--user NAME] [--persistence-mode | --no-persistence-mode] [--verbose]
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_DIR "/run/nvidia-persistenced"

static volatile sig_atomic_t done;
static void stop(int signal) { (void)signal; done = 1; }

static int module_version(char *out, size_t size)
{
	FILE *file = fopen("/proc/driver/nvidia/version", "r");
	char line[512];
	if (!file)
		return -1;
	if (!fgets(line, sizeof line, file)) {
		fclose(file);
		return -1;
	}
	fclose(file);
	/* "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.105.08  Release ..." */
	char *word = strtok(line, " ");
	while (word) {
		if (strchr(word, '.') && word[0] >= '0' && word[0] <= '9') {
			snprintf(out, size, "%s", word);
			return 0;
		}
		word = strtok(NULL, " ");
	}
	return -1;
}

int main(int argc, char **argv)
{
	int persistence = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-persistence-mode"))
			persistence = 0;
		else if (!strcmp(argv[i], "--persistence-mode"))
			persistence = 1;
	}
	char loaded[64];
	if (module_version(loaded, sizeof loaded) != 0) {
		fprintf(stderr, "nvidia-persistenced failed to initialize: the NVIDIA kernel module is not loaded\n");
		return 1;
	}
	if (strcmp(loaded, NV_VERSION) != 0) {
		fprintf(stderr, "nvidia-persistenced failed to initialize: NVIDIA driver version mismatch "
				"(daemon %s, kernel module %s)\n", NV_VERSION, loaded);
		return 1;
	}
	int ctl = open("/dev/nvidiactl", O_RDWR);
	int gpu = open("/dev/nvidia0", O_RDWR);
	if (ctl < 0 || gpu < 0) {
		perror("nvidia-persistenced: cannot open /dev/nvidiactl or /dev/nvidia0");
		return 1;
	}
	mkdir(STATE_DIR, 0755);
	FILE *mode = fopen(STATE_DIR "/persistence-mode", "w");
	if (mode) {
		fprintf(mode, "%s\n", persistence ? "Enabled" : "Disabled");
		fclose(mode);
	}
	signal(SIGTERM, stop);
	signal(SIGINT, stop);
	printf("nvidia-persistenced %s: started, persistence mode %s\n", NV_VERSION,
	       persistence ? "enabled" : "disabled");
	fflush(stdout);
	while (!done)
		pause();
	unlink(STATE_DIR "/persistence-mode");
	printf("nvidia-persistenced %s: shutting down\n", NV_VERSION);
	return 0;
}
