/* Helper for the cgroup v2 VM (scripts/cgroup-v2-vm.sh); busybox lacks these commands.
 *   vmtool setxattr PATH NAME VALUE   set an extended attribute (systemd's delegation mark)
 *   vmtool runas UID GID CMD [ARG]... drop all groups, setgid, setuid, exec CMD
 *   vmtool pairs N GAP_MS A... ::: B... run A, sleep GAP, run B, sleep GAP, N times (the
 *                                      same protocol as scripts/bench-pairs.py); print the
 *                                      median, p10, p90 of A, B, A-B (ms) and A/B
 * Built statically on the host, so the initramfs needs no extra libraries. */
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Wall time of one run of argv (stdout/stderr to /dev/null), or -1 if it failed. */
static double run_once(char **argv) {
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "vmtool pairs: %s failed (status %d)\n", argv[0], st);
        return -1;
    }
    return now_ms() - t0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summary(const char *what, double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    printf("%-6s median %8.2f  p10 %8.2f  p90 %8.2f\n", what, med, v[(int)(0.1 * n)],
           v[(int)(0.9 * n) < n ? (int)(0.9 * n) : n - 1]);
}

static int pairs(int argc, char **argv) {
    int n = atoi(argv[2]);
    int gap = atoi(argv[3]);
    char **a = argv + 4, **b = NULL;
    for (int i = 4; i < argc; i++)
        if (strcmp(argv[i], ":::") == 0) {
            argv[i] = NULL;
            b = argv + i + 1;
        }
    if (n < 1 || !b || !*a || !*b) {
        fprintf(stderr, "usage: vmtool pairs N GAP_MS A... ::: B...\n");
        return 2;
    }
    double *xa = calloc(n, sizeof(double)), *xb = calloc(n, sizeof(double));
    double *d = calloc(n, sizeof(double)), *r = calloc(n, sizeof(double));
    struct timespec pause = {gap / 1000, (gap % 1000) * 1000000L};
    if (run_once(a) < 0 || run_once(b) < 0) return 1; /* warm-up */
    for (int i = 0; i < n; i++) {
        xa[i] = run_once(a);
        nanosleep(&pause, NULL);
        xb[i] = run_once(b);
        nanosleep(&pause, NULL);
        if (xa[i] < 0 || xb[i] < 0) return 1;
        d[i] = xa[i] - xb[i];
        r[i] = xa[i] / xb[i];
    }
    summary("A ms", xa, n);
    summary("B ms", xb, n);
    summary("A-B ms", d, n);
    summary("A/B", r, n);
    printf("(%d pairs, gap %d ms)\n", n, gap);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "setxattr") == 0) {
        if (setxattr(argv[2], argv[3], argv[4], strlen(argv[4]), 0) != 0) {
            perror("vmtool setxattr");
            return 1;
        }
        return 0;
    }
    if (argc >= 7 && strcmp(argv[1], "pairs") == 0) return pairs(argc, argv);
    if (argc >= 5 && strcmp(argv[1], "runas") == 0) {
        uid_t uid = (uid_t)strtoul(argv[2], NULL, 10);
        gid_t gid = (gid_t)strtoul(argv[3], NULL, 10);
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
            perror("vmtool runas");
            return 1;
        }
        execvp(argv[4], argv + 4);
        perror(argv[4]);
        return 127;
    }
    fprintf(stderr, "usage: vmtool setxattr PATH NAME VALUE | vmtool runas UID GID CMD [ARG]... |"
                    " vmtool pairs N GAP_MS A... ::: B...\n");
    return 2;
}
