/* Helper for the cgroup v2 VM (scripts/cgroup-v2-vm.sh); busybox lacks both commands.
 *   vmtool setxattr PATH NAME VALUE   set an extended attribute (systemd's delegation mark)
 *   vmtool runas UID GID CMD [ARG]... drop all groups, setgid, setuid, exec CMD
 * Built statically on the host, so the initramfs needs no extra libraries. */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "setxattr") == 0) {
        if (setxattr(argv[2], argv[3], argv[4], strlen(argv[4]), 0) != 0) {
            perror("vmtool setxattr");
            return 1;
        }
        return 0;
    }
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
    fprintf(stderr, "usage: vmtool setxattr PATH NAME VALUE | vmtool runas UID GID CMD [ARG]...\n");
    return 2;
}
