#!/bin/sh
# Builds the small native helpers of the runc runtime into build/native/ (run by
# `npm ci` / `npm install` as the postinstall step, or `npm run build:native`):
#   taskrouter-exec   the exec wrapper inside every runc task (static: runs in any image)
#   taskrouter-mount  places image mounts into tasks whose runtime does not propagate them
#   taskrouter-pty    the terminal of a sidecar with pty_info, inside it (static)
#   taskrouter-console  the terminal side of PTY execs for runtimes with --console-socket (runsc)
#   taskrouter-spawner  starts runc execs and host pipe execs for the router (vfork, no fork of Node)
#   taskrouter-agent  the per-task exec agent: starts, feeds, logs and reaps a task's execs (static)
#   taskrouter-opentree  starts a runc task's agent with fd 3 a detached mount of its exec directory
#   modal-sandbox-fs-tools  the filesystem helper Modal's SDKs exec in every task (static; ../shared/FS-TOOLS.md)
# Needs a C compiler and libc's static archive (Debian: gcc + libc6-dev), as node-pty's build does.
set -eu
cd "$(dirname "$0")/.."
CC="${CC:-cc}"
mkdir -p build/native
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/taskrouter-exec.tmp native/exec-wrapper.c
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/taskrouter-pty.tmp native/pty-holder.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-mount.tmp native/mount-into.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-console.tmp native/console-relay.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-spawner.tmp native/spawner.c
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/taskrouter-agent.tmp native/task-agent.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-opentree.tmp native/open-tree.c
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/modal-sandbox-fs-tools.tmp \
  native/fs-tools.c native/fs-tools-watch.c
for n in exec pty mount console spawner agent opentree; do
  mv "build/native/taskrouter-$n.tmp" "build/native/taskrouter-$n"
done
mv build/native/modal-sandbox-fs-tools.tmp build/native/modal-sandbox-fs-tools
