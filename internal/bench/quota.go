package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CPU quota (--gateway-cpu-quota): a container's CPU limit (Kubernetes's
// resources.limits.cpu) is a CFS bandwidth quota, F CPUs' worth of time
// every period, whatever the cores. With it, every gateway and floor
// process runs in a cgroup of its own under that quota, so that a machine
// whose generator cannot send twice what a whole CPU sustains can still
// load the gateway past what it sustains.

// quotaPeriod is the CFS period the quotas are written against unless
// --gateway-cpu-period names another (the kernel's default).
const quotaPeriod = 100 * time.Millisecond

// periodOr is p, or quotaPeriod when p is 0.
func periodOr(p time.Duration) time.Duration {
	if p <= 0 {
		return quotaPeriod
	}
	return p
}

// cpuCgroup is where the bench makes its processes' cgroups: the bench's
// own cgroup of the cpu controller.
type cpuCgroup struct {
	dir string // the bench's own cgroup directory (children are made in it)
	v2  bool   // cgroup2 (cpu.max, cgroup.threads) rather than v1 (cpu.cfs_*_us, tasks)
}

// cgroupSeq numbers the cgroups this process makes.
var cgroupSeq atomic.Int64

// errnoText is err with its errno's name, as "permission denied (EACCES)".
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Sprintf("%v (%s)", err, unix.ErrnoName(errno))
	}
	return err.Error()
}

// findCPUCgroup finds the bench's cgroup of the cpu controller under the
// cgroup file system mounted at root (/sys/fs/cgroup): cgroup2 when root is
// one (cpu.max), else the v1 hierarchy at root/cpu (cpu.cfs_quota_us). It
// says what is missing, with the path, when neither is there.
func findCPUCgroup(root string) (cpuCgroup, error) {
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: %s", errnoText(err))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: no cgroup file system at %s: %s", root, errnoText(err))
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		path, ok := ownCgroup(string(own), "")
		if !ok {
			return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: /proc/self/cgroup names no cgroup2 path")
		}
		dir := filepath.Join(root, path)
		ctrl, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: %s", errnoText(err))
		}
		if !slices.Contains(strings.Fields(string(ctrl)), "cpu") {
			return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: the cpu controller is not available in %s (its cgroup.controllers: %q)", dir, strings.TrimSpace(string(ctrl)))
		}
		return cpuCgroup{dir: dir, v2: true}, nil
	}
	mount := filepath.Join(root, "cpu")
	path, ok := ownCgroup(string(own), "cpu")
	if !ok {
		return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: /proc/self/cgroup names no cgroup of the cpu controller")
	}
	dir := filepath.Join(mount, path)
	if _, err := os.Stat(filepath.Join(dir, "cpu.cfs_quota_us")); err != nil {
		return cpuCgroup{}, fmt.Errorf("--gateway-cpu-quota: no cpu controller with CFS quotas at %s: %s", dir, errnoText(err))
	}
	return cpuCgroup{dir: dir}, nil
}

// ownCgroup reads the path of the process's cgroup from /proc/self/cgroup
// text: the cgroup2 line ("0::/path") when controller is "", else the v1
// line whose controller list contains controller ("4:cpu,cpuacct:/path").
func ownCgroup(text, controller string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if controller == "" && parts[0] == "0" && parts[1] == "" {
			return parts[2], true
		}
		if controller != "" && slices.Contains(strings.Split(parts[1], ","), controller) {
			return parts[2], true
		}
	}
	return "", false
}

// quotaMicros is F CPUs as a CFS quota over period (0: quotaPeriod), in µs.
func quotaMicros(cpus float64, period time.Duration) int64 {
	return int64(math.Round(cpus * float64(periodOr(period)/time.Microsecond)))
}

// quotaProcs is GOMAXPROCS for a process under a quota of F CPUs (and,
// when pinned, bound to n CPUs): ceil(F), at least 1, at most n.
func quotaProcs(f float64, pinned int) int {
	p := max(1, int(math.Ceil(f)))
	if pinned > 0 {
		p = min(p, pinned)
	}
	return p
}

// checkQuota refuses a quota the kernel would not take or the machine
// cannot give.
func checkQuota(f float64) error {
	if math.IsNaN(f) || f < 0.01 || f > float64(runtime.NumCPU()) {
		return fmt.Errorf("--gateway-cpu-quota %v: give a number of CPUs from 0.01 to %d", f, runtime.NumCPU())
	}
	return nil
}

// newChild makes a cgroup for one launched process, named after the
// bench's pid, with a quota of f CPUs every period (0: quotaPeriod).
// remove takes it away again.
func (c cpuCgroup) newChild(f float64, period time.Duration, name string) (string, error) {
	dir := filepath.Join(c.dir, fmt.Sprintf("tollgate-bench-%d-%d-%s", os.Getpid(), cgroupSeq.Add(1), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("--gateway-cpu-quota: making cgroup %s: %s", dir, errnoText(err))
	}
	periodUs, quota := int64(periodOr(period)/time.Microsecond), quotaMicros(f, period)
	var writes [][2]string
	if c.v2 {
		writes = [][2]string{{"cpu.max", fmt.Sprintf("%d %d", quota, periodUs)}}
	} else {
		writes = [][2]string{{"cpu.cfs_period_us", strconv.FormatInt(periodUs, 10)}, {"cpu.cfs_quota_us", strconv.FormatInt(quota, 10)}}
	}
	for _, w := range writes {
		if err := writeCgroupFile(dir, w[0], w[1]); err != nil {
			_ = os.Remove(dir)
			return "", err
		}
	}
	return dir, nil
}

// writeCgroupFile writes one value to a cgroup's control file. The file
// exists already, so it is opened without O_CREATE: a missing control file
// is an error, not a new plain file.
func writeCgroupFile(dir, name, value string) error {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(value)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("--gateway-cpu-quota: writing %q to %s: %s", value, path, errnoText(err))
	}
	return nil
}

// enable makes the cpu controller available to the children of c (cgroup2
// only: a v1 hierarchy has it everywhere).
func (c cpuCgroup) enable() error {
	if !c.v2 {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("--gateway-cpu-quota: %s", errnoText(err))
	}
	if slices.Contains(strings.Fields(string(b)), "cpu") {
		return nil
	}
	// EBUSY here means c has processes of its own and is not the root:
	// cgroup2 lets a controller be given to children only of a cgroup
	// without processes (run the bench in a delegated cgroup of its own).
	return writeCgroupFile(c.dir, "cgroup.subtree_control", "+cpu")
}

// probe checks, before anything starts, that a child cgroup can be made
// with a quota and removed again.
func (c cpuCgroup) probe(f float64) error {
	if err := c.enable(); err != nil {
		return err
	}
	dir, err := c.newChild(f, 0, "probe")
	if err != nil {
		return err
	}
	return removeCgroup(dir)
}

// enter moves process pid, every thread of it, into the cgroup at dir:
// cgroup.procs moves a whole thread group, and a thread the process starts
// later starts in its creator's cgroup.
func enterCgroup(dir string, pid int) error {
	return writeCgroupFile(dir, "cgroup.procs", strconv.Itoa(pid))
}

// threadsIn checks that every thread of pid is listed in the cgroup at
// dir (v1's tasks, cgroup2's cgroup.threads).
func threadsIn(dir string, pid int) error {
	list := "tasks"
	if _, err := os.Stat(filepath.Join(dir, list)); err != nil {
		list = "cgroup.threads"
	}
	b, err := os.ReadFile(filepath.Join(dir, list))
	if err != nil {
		return fmt.Errorf("--gateway-cpu-quota: %s", errnoText(err))
	}
	in := strings.Fields(string(b))
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if len(tasks) == 0 {
		return fmt.Errorf("--gateway-cpu-quota: process %d lists no threads", pid)
	}
	for _, t := range tasks {
		if tid := filepath.Base(t); !slices.Contains(in, tid) {
			if _, err := os.Stat(t); err != nil {
				continue // the thread ended
			}
			return fmt.Errorf("--gateway-cpu-quota: thread %s of process %d is not in %s", tid, pid, filepath.Join(dir, list))
		}
	}
	return nil
}

// removeCgroup removes an emptied cgroup. A cgroup may still count a
// process that has just been reaped for a moment (cgroup2 empties it
// asynchronously), so EBUSY is retried for a while.
func removeCgroup(dir string) error {
	var err error
	for range 200 {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %s", dir, errnoText(err))
}
