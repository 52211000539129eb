package demo

import "syscall"

// hubProcAttr puts a hub in its own process group and has the kernel send
// it SIGTERM (a clean stop) if the demo dies without stopping it.
func hubProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
