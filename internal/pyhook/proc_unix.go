//go:build unix

package pyhook

import (
	"os"
	"syscall"
)

// procAttr starts a worker in a process group of its own.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup kills the worker's process group (the worker and any child it
// left behind), and the worker itself should the group be gone.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	_ = p.Kill()
}
