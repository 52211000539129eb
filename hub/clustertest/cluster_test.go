package clustertest

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func others(all []*procHub, not *procHub) []*procHub {
	var out []*procHub
	for _, h := range all {
		if h != not {
			out = append(out, h)
		}
	}
	return out
}

// TestPartitionMinorityStopsAcking cuts the leader off from the other two
// hubs: the old leader stops acking, the majority elects a new leader and
// goes on, and after healing every FSM is equal.
func TestPartitionMinorityStopsAcking(t *testing.T) {
	needBinary(t)
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	old := c.leaderAmong(c.hubs...)
	s := c.newSensor("sensor-a")
	s.add(20, 8)
	if err := s.flush(ctx, c.ingestAddrs(old)); err != nil {
		t.Fatal(err)
	}
	// A stream to the old leader, opened before the cut.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	st, err := jasperv1.NewIngestServiceClient(c.conn(old.ingest, s.files)).Stream(cctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Hello{Hello: &jasperv1.Hello{SensorId: s.id}}})
	if r, err := st.Recv(); err != nil || r.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", r, err)
	}

	// Cut the old leader off: its proxy refuses the others, theirs refuse it.
	maj := others(c.hubs, old)
	var majIPs []string
	for _, h := range maj {
		majIPs = append(majIPs, h.ip)
		h.proxy.block(old.ip)
	}
	old.proxy.block(majIPs...)
	t.Logf("cut %s (leader) off from %s and %s", old.id, maj[0].id, maj[1].id)

	// The minority side must not ack a batch sent after the cut.
	s.add(1, 8)
	cut := s.spool[0]
	if err := st.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: cut}}); err != nil {
		t.Fatal(err)
	}
	answer := make(chan *jasperv1.StreamResponse, 1)
	go func() {
		r, err := st.Recv()
		if err != nil {
			r = nil
		}
		answer <- r
	}()
	// The majority elects a new leader and goes on.
	newLeader := c.leaderAmong(maj...)
	t.Logf("majority elected %s", newLeader.id)
	var oldAnswer *jasperv1.StreamResponse
	select {
	case oldAnswer = <-answer:
	case <-time.After(30 * time.Second):
		t.Fatal("the old leader neither refused nor dropped the stream")
	}
	if a := oldAnswer.GetAck(); a != nil {
		t.Fatalf("the minority acked batch %d after the cut", a.Sequence)
	}
	t.Logf("old leader answered %v", oldAnswer)
	ccancel()
	if st, err := c.status(old); err == nil && st.RaftState == "Leader" {
		t.Fatalf("%s still claims leadership while cut off", old.id)
	}
	// One batch per entry, so that the majority's log outgrows the
	// snapshot threshold and the old leader must catch up from a snapshot.
	for range 40 {
		s.add(1, 8)
		if err := s.flush(ctx, c.ingestAddrs(maj...)); err != nil {
			t.Fatal(err)
		}
	}
	checkSensor(t, c.equalStates(maj...), s)
	time.Sleep(time.Second) // let the majority snapshot and compact its log

	// Heal: the old leader rejoins and catches up.
	for _, h := range c.hubs {
		h.proxy.heal()
	}
	final := c.equalStates(c.hubs...)
	for _, h := range c.hubs {
		st, err := c.status(h)
		if err != nil {
			t.Fatal(err)
		}
		checkSensor(t, st, s)
	}
	t.Logf("healed: all hubs at FSM index %d, state hash %s", final.fsmIndex, final.hash[:16])
}

// TestKillLeaderTwiceAndRestartFollower streams from two sensors while the
// leader is killed with SIGKILL twice and a follower restarted; afterwards
// every acked batch is in every FSM exactly once.
func TestKillLeaderTwiceAndRestartFollower(t *testing.T) {
	needBinary(t)
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c.leaderAmong(c.hubs...)
	sensors := []*sensor{c.newSensor("sensor-a"), c.newSensor("sensor-b")}
	addrs := c.ingestAddrs(c.hubs...)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range sensors {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.add(5, 16)
				_ = s.flush(ctx, addrs)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	acked := func() int {
		n := 0
		for _, s := range sensors {
			s.mu.Lock()
			n += len(s.acked)
			s.mu.Unlock()
		}
		return n
	}
	progress := func(what string) {
		base := acked()
		waitFor(t, "sensors acked after "+what, 60*time.Second, func() bool { return acked() >= base+20 })
	}
	progress("start")
	for round := 1; round <= 2; round++ {
		l := c.leaderAmong(c.hubs...)
		t.Logf("round %d: kill -9 leader %s (acked so far %d)", round, l.id, acked())
		c.kill(l, syscall.SIGKILL)
		c.leaderAmong(others(c.hubs, l)...)
		progress("killing " + l.id)
		c.start(l)
	}
	l := c.leaderAmong(c.hubs...)
	f := others(c.hubs, l)[0]
	t.Logf("restart follower %s", f.id)
	c.kill(f, syscall.SIGTERM)
	progress("stopping " + f.id)
	c.start(f)
	progress("restarting " + f.id)
	close(stop)
	wg.Wait()
	for _, s := range sensors {
		if err := s.flush(ctx, addrs); err != nil {
			t.Fatal(err)
		}
	}
	c.equalStates(c.hubs...)
	for _, h := range c.hubs {
		st, err := c.status(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sensors {
			checkSensor(t, st, s)
		}
	}
	t.Logf("every acked batch (%d) is in every FSM exactly once", acked())
}
