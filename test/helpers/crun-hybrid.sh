#!/bin/sh
# crun for tests on hosts with hybrid cgroups (v1 controllers, plus a cgroup2 mount at
# /sys/fs/cgroup/unified that has controllers of its own, e.g. hugetlb): crun 1.8 refuses
# to start any container there ("cgroups in hybrid mode not supported, drop all
# controllers from cgroupv2"), even with --cgroup-manager=disabled. This runs crun in a
# private mount namespace (mount propagation unchanged, so later mounts under a task's
# rootfs still reach it) where that controller list reads empty; crun then uses the v1
# controllers, as runc does. Nothing outside that namespace changes.
exec unshare -m --propagation unchanged /bin/sh -c \
  'mount --bind /dev/null /sys/fs/cgroup/unified/cgroup.controllers && exec "${CRUN:-/usr/bin/crun}" "$@"' \
  crun "$@"
