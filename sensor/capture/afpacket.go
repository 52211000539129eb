//go:build linux

package capture

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/afpacket"
	"github.com/google/gopacket/layers"
)

// AFPacketOptions configure a live capture.
type AFPacketOptions struct {
	// Sockets is the number of AF_PACKET sockets joined in one
	// PACKET_FANOUT group (hash of the flow), each read by its own
	// goroutine; 1 (or 0) reads one socket directly, with no copy.
	Sockets int
	// FanoutID names the fanout group; 0 derives one from the process id.
	FanoutID uint16
	// FrameSize is the largest frame captured whole (TPACKET_V3
	// tp_frame_size); default 4096.
	FrameSize int
	// BlockSize and NumBlocks size each socket's ring (default 1 MiB x 64).
	BlockSize int
	NumBlocks int
	// PollTimeout is how long a read waits for a frame before reporting a
	// timeout (default 100 ms), so the reader can seal bins on a quiet link.
	PollTimeout time.Duration
	// LinkType overrides the link type read from sysfs (0: detect).
	LinkType layers.LinkType
}

func (o *AFPacketOptions) defaults() {
	if o.Sockets <= 0 {
		o.Sockets = 1
	}
	if o.FanoutID == 0 {
		o.FanoutID = uint16(os.Getpid())
	}
	if o.FrameSize == 0 {
		o.FrameSize = afpacket.DefaultFrameSize
	}
	if o.BlockSize == 0 {
		o.BlockSize = 1 << 20
	}
	if o.NumBlocks == 0 {
		o.NumBlocks = 64
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = 100 * time.Millisecond
	}
}

// errTimeout is what ReadPacket returns when no frame came within the poll
// timeout; it matches os.ErrDeadlineExceeded and has Timeout() true.
var errTimeout = fmt.Errorf("capture: no frame: %w", os.ErrDeadlineExceeded)

// AFPacket is a live capture from one interface through TPACKET_V3 rings.
//
// ReadPacket must be called from one goroutine at a time; Stats and Close
// may be called from any goroutine. Close makes a blocked or later
// ReadPacket return io.EOF (within one poll timeout).
type AFPacket struct {
	iface    string
	opts     AFPacketOptions
	link     layers.LinkType
	socks    []*afpacket.TPacket
	perSock  []atomic.Uint64 // frames read from each socket
	since    time.Time
	received atomic.Uint64
	closed   atomic.Bool

	statsMu sync.Mutex
	drops   uint64 // last sum read

	readMu sync.Mutex // held by ReadPacket in direct mode

	// fan-in mode
	ch   chan *frameBatch
	free chan *frameBatch
	done chan struct{}
	wg   sync.WaitGroup
	cur  *frameBatch
	pos  int
	errs chan error

	closeOnce sync.Once
	closeErr  error
}

// frameBatch carries frames copied out of one socket's ring.
type frameBatch struct {
	buf  []byte
	ends []int
	cis  []gopacket.CaptureInfo
}

const (
	batchFrames = 128
	batchBytes  = 256 << 10
	batchAge    = 5 * time.Millisecond
)

// OpenAFPacket opens a live capture on iface. The sockets are created in
// the network namespace of the calling thread.
func OpenAFPacket(iface string, opts AFPacketOptions) (*AFPacket, error) {
	opts.defaults()
	if opts.Sockets > 64 {
		return nil, fmt.Errorf("open %s: %d sockets is more than 64", iface, opts.Sockets)
	}
	s := &AFPacket{iface: iface, opts: opts, since: time.Now(), link: opts.LinkType}
	if s.link == 0 {
		s.link = detectLinkType(iface)
	}
	for i := 0; i < opts.Sockets; i++ {
		tp, err := afpacket.NewTPacket(
			afpacket.OptInterface(iface),
			afpacket.OptFrameSize(opts.FrameSize),
			afpacket.OptBlockSize(opts.BlockSize),
			afpacket.OptNumBlocks(opts.NumBlocks),
			afpacket.OptPollTimeout(opts.PollTimeout),
			afpacket.OptBlockTimeout(10*time.Millisecond),
			afpacket.OptAddVLANHeader(true),
			afpacket.TPacketVersion3,
			afpacket.SocketRaw,
		)
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("open AF_PACKET socket on %s: %w", iface, err)
		}
		s.socks = append(s.socks, tp)
		if opts.Sockets > 1 {
			if err := tp.SetFanout(afpacket.FanoutHash, opts.FanoutID); err != nil {
				s.closeSockets()
				return nil, fmt.Errorf("join fanout group %d on %s: %w", opts.FanoutID, iface, err)
			}
		}
	}
	s.perSock = make([]atomic.Uint64, len(s.socks))
	if opts.Sockets > 1 {
		s.ch = make(chan *frameBatch, 2*opts.Sockets)
		s.free = make(chan *frameBatch, 4*opts.Sockets)
		s.done = make(chan struct{})
		s.errs = make(chan error, opts.Sockets)
		for i, tp := range s.socks {
			s.wg.Add(1)
			go s.pump(tp, &s.perSock[i])
		}
	}
	return s, nil
}

// detectLinkType maps the interface's ARPHRD type to a link type.
func detectLinkType(iface string) layers.LinkType {
	b, err := os.ReadFile("/sys/class/net/" + iface + "/type")
	if err != nil {
		return layers.LinkTypeEthernet
	}
	switch v, _ := strconv.Atoi(strings.TrimSpace(string(b))); v {
	case 65534, 776, 778: // none (tun), sit, ipgre: bare IP packets
		return layers.LinkTypeRaw
	default: // ether, loopback (zero Ethernet header), ...
		return layers.LinkTypeEthernet
	}
}

// Live reports that this is a live source (see summary.Run).
func (s *AFPacket) Live() bool { return true }

// LinkType is the link type of every frame.
func (s *AFPacket) LinkType() layers.LinkType { return s.link }

// ReadPacket returns the next frame, a timeout error (matching
// os.ErrDeadlineExceeded) when none came within the poll timeout, or io.EOF
// after Close.
func (s *AFPacket) ReadPacket() ([]byte, gopacket.CaptureInfo, error) {
	if len(s.socks) == 1 {
		return s.readDirect()
	}
	return s.readFanIn()
}

func (s *AFPacket) readDirect() ([]byte, gopacket.CaptureInfo, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.closed.Load() {
		return nil, gopacket.CaptureInfo{}, io.EOF
	}
	data, ci, err := s.socks[0].ZeroCopyReadPacketData()
	if err != nil {
		if errors.Is(err, afpacket.ErrTimeout) {
			if s.closed.Load() {
				return nil, ci, io.EOF
			}
			return nil, ci, errTimeout
		}
		return nil, ci, fmt.Errorf("read %s: %w", s.iface, err)
	}
	s.received.Add(1)
	s.perSock[0].Add(1)
	return data, ci, nil
}

// SocketReceived returns how many frames each socket of the fanout group
// has read (one entry per socket), to see how the kernel spreads the load.
func (s *AFPacket) SocketReceived() []uint64 {
	out := make([]uint64, len(s.perSock))
	for i := range s.perSock {
		out[i] = s.perSock[i].Load()
	}
	return out
}

func (s *AFPacket) readFanIn() ([]byte, gopacket.CaptureInfo, error) {
	for {
		if s.cur != nil && s.pos < len(s.cur.ends) {
			start := 0
			if s.pos > 0 {
				start = s.cur.ends[s.pos-1]
			}
			data, ci := s.cur.buf[start:s.cur.ends[s.pos]], s.cur.cis[s.pos]
			s.pos++
			s.received.Add(1)
			return data, ci, nil
		}
		if s.cur != nil {
			select {
			case s.free <- s.cur:
			default:
			}
			s.cur = nil
		}
		if s.closed.Load() {
			return nil, gopacket.CaptureInfo{}, io.EOF
		}
		t := time.NewTimer(s.opts.PollTimeout)
		select {
		case b := <-s.ch:
			t.Stop()
			s.cur, s.pos = b, 0
		case err := <-s.errs:
			t.Stop()
			return nil, gopacket.CaptureInfo{}, err
		case <-s.done:
			t.Stop()
			return nil, gopacket.CaptureInfo{}, io.EOF
		case <-t.C:
			return nil, gopacket.CaptureInfo{}, errTimeout
		}
	}
}

// pump copies frames from one socket into batches for readFanIn.
func (s *AFPacket) pump(tp *afpacket.TPacket, count *atomic.Uint64) {
	defer s.wg.Done()
	var b *frameBatch
	var first time.Time
	flush := func() bool {
		if b == nil || len(b.ends) == 0 {
			return true
		}
		select {
		case s.ch <- b:
			b = nil
			return true
		case <-s.done:
			return false
		}
	}
	for !s.closed.Load() {
		data, ci, err := tp.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, afpacket.ErrTimeout) {
				if !flush() {
					return
				}
				continue
			}
			select {
			case s.errs <- fmt.Errorf("read %s: %w", s.iface, err):
			default:
			}
			return
		}
		if b == nil {
			select {
			case b = <-s.free:
				b.buf, b.ends, b.cis = b.buf[:0], b.ends[:0], b.cis[:0]
			default:
				b = &frameBatch{buf: make([]byte, 0, batchBytes), ends: make([]int, 0, batchFrames), cis: make([]gopacket.CaptureInfo, 0, batchFrames)}
			}
			first = ci.Timestamp
		}
		count.Add(1)
		b.buf = append(b.buf, data...)
		b.ends = append(b.ends, len(b.buf))
		ci.AncillaryData = nil
		b.cis = append(b.cis, ci)
		if len(b.ends) >= batchFrames || len(b.buf) >= batchBytes-s.opts.FrameSize || ci.Timestamp.Sub(first) > batchAge {
			if !flush() {
				return
			}
		}
	}
}

// Stats reports frames handed out and the kernel's drop counters summed over
// the sockets (PACKET_STATISTICS, TPACKET_V3).
func (s *AFPacket) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if !s.closed.Load() {
		var sum uint64
		for _, tp := range s.socks {
			_, v3, err := tp.SocketStats()
			if err != nil {
				continue
			}
			sum += uint64(v3.Drops())
		}
		s.drops = max(s.drops, sum)
	}
	return Stats{Received: s.received.Load(), KernelDrops: s.drops, Since: s.since}
}

// Close stops the capture; it is idempotent.
func (s *AFPacket) Close() error {
	s.closeOnce.Do(func() {
		s.Stats() // keep the final drop counts
		s.statsMu.Lock()
		s.closed.Store(true)
		s.statsMu.Unlock()
		if s.done != nil {
			close(s.done)
			s.wg.Wait()
		}
		s.readMu.Lock() // wait out a direct read in progress
		s.closeSockets()
		s.readMu.Unlock()
	})
	return s.closeErr
}

func (s *AFPacket) closeSockets() {
	for _, tp := range s.socks {
		tp.Close()
	}
}
