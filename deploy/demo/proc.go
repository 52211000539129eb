package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// hubProc is a hub run as a child process: `BIN hub run --config PATH`.
// It has its own process group, so that a Ctrl-C at the terminal reaches
// only the demo, which stops the hubs in order.
type hubProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startHubProc(bin, cfgPath string, out *os.File) (*hubProc, error) {
	cmd := exec.Command(bin, "hub", "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = hubProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s hub run: %w", bin, err)
	}
	p := &hubProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports the process's end, if it ended.
func (p *hubProc) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// Stop interrupts the hub (it stops in order, as on Ctrl-C) and waits for
// it until ctx ends, then kills it.
func (p *hubProc) Stop(ctx context.Context) error {
	if ended, _ := p.exited(); ended {
		return nil
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("killed: no clean stop in time: %w", ctx.Err())
	}
}
