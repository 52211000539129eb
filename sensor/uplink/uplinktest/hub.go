// Package uplinktest runs a small in-process ingest hub for tests: a real
// gRPC server over mTLS (certificates from internal/pki) implementing
// jasper.v1.IngestService. It stores batches by (sensor, sequence), answers
// every batch with an ack after storing it (duplicate=true when it already
// had it), and lets a test script refusals. It has no raft: "committed"
// means "in the hub's map".
package uplinktest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// PKI is a federation CA with one hub and one sensor certificate on disk.
type PKI struct {
	Hub    pki.Files
	Sensor pki.Files
}

// NewPKI writes ca.pem, hub.pem, hub-key.pem, sensor.pem and sensor-key.pem
// under dir for a sensor with the given id and prefixes (country "JP").
func NewPKI(dir, sensorID string, prefixes []netip.Prefix) (PKI, error) {
	ca, err := pki.NewCA("test federation", 24*time.Hour)
	if err != nil {
		return PKI{}, err
	}
	if err := ca.Save(dir); err != nil {
		return PKI{}, err
	}
	hub, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-1"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		return PKI{}, err
	}
	sensor, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleSensor, ID: sensorID, Country: "JP", Prefixes: prefixes}, Validity: time.Hour})
	if err != nil {
		return PKI{}, err
	}
	if err := pki.WriteIssued(dir, "hub", hub); err != nil {
		return PKI{}, err
	}
	if err := pki.WriteIssued(dir, "sensor", sensor); err != nil {
		return PKI{}, err
	}
	caPath := filepath.Join(dir, "ca.pem")
	return PKI{
		Hub:    pki.Files{CA: caPath, Cert: filepath.Join(dir, "hub.pem"), Key: filepath.Join(dir, "hub-key.pem")},
		Sensor: pki.Files{CA: caPath, Cert: filepath.Join(dir, "sensor.pem"), Key: filepath.Join(dir, "sensor-key.pem")},
	}, nil
}

type key struct {
	sensor string
	seq    uint64
}

// Hub is the test ingest server.
type Hub struct {
	jasperv1.UnimplementedIngestServiceServer

	// Addr is the listening address (127.0.0.1:port).
	Addr string
	// ID is sent in the Welcome.
	ID string
	// MaxBatchBytes is sent in the Welcome.
	MaxBatchBytes uint32
	// OnHello, when set, may refuse a Hello (return nil to welcome).
	OnHello func(*jasperv1.Hello) *jasperv1.Refusal
	// CommittedThrough, when set, replaces the hub's own answer in the
	// Welcome (e.g. a high watermark, as a raft hub gives).
	CommittedThrough func(*jasperv1.Hello) uint64
	// OnBatch, when set, may refuse a batch (return nil to store and ack)
	// or break the stream (return ErrBreak as the error).
	OnBatch func(*jasperv1.Batch) (*jasperv1.Refusal, error)

	srv *grpc.Server
	ln  net.Listener

	mu          sync.Mutex
	welcomeZero bool
	batches     map[key]*jasperv1.Batch
	received    int // batch messages received, resends included
	dups        int
	hellos      []*jasperv1.Hello
}

// ErrBreak, returned by OnBatch, ends the stream with an error.
var ErrBreak = errors.New("test hub breaks the stream")

// Start serves on addr ("127.0.0.1:0" picks a port) with mTLS from files.
func Start(addr string, files pki.Files) (*Hub, error) {
	tlsConf, err := pki.ServerConfig(files)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &Hub{Addr: ln.Addr().String(), ID: "test-hub", MaxBatchBytes: 4 << 20, ln: ln, batches: map[key]*jasperv1.Batch{}}
	h.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)))
	jasperv1.RegisterIngestServiceServer(h.srv, h)
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

// Stop stops the server at once, breaking open streams.
func (h *Hub) Stop() { h.srv.Stop() }

// Preload stores batches as already committed.
func (h *Hub) Preload(sensor string, bs ...*jasperv1.Batch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range bs {
		h.batches[key{sensor, b.Sequence}] = b
	}
}

// Batches returns the stored batches of a sensor by sequence.
func (h *Hub) Batches(sensor string) map[uint64]*jasperv1.Batch {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[uint64]*jasperv1.Batch{}
	for k, b := range h.batches {
		if k.sensor == sensor {
			out[k.seq] = b
		}
	}
	return out
}

// Sequences returns the stored sequences of a sensor, sorted.
func (h *Hub) Sequences(sensor string) []uint64 {
	var out []uint64
	for s := range h.Batches(sensor) {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Counts returns how many batch messages arrived and how many of them were
// duplicates of stored batches.
func (h *Hub) Counts() (received, duplicates int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.received, h.dups
}

// Hellos returns the Hellos received so far.
func (h *Hub) Hellos() []*jasperv1.Hello {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*jasperv1.Hello(nil), h.hellos...)
}

// SetWelcomeZero makes the hub answer Hellos with committed_through 0, as
// a hub that cannot tell would: the sensor then resends what the hub has,
// and the hub must recognise the duplicates by (sensor, sequence).
func (h *Hub) SetWelcomeZero(v bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.welcomeZero = v
}

// committedThrough is the highest h such that every sequence from the
// sensor's first unacknowledged one up to h is stored: conservative, so that
// a sensor never drops a batch the hub lacks.
func (h *Hub) committedThrough(sensor string, hello *jasperv1.Hello) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.welcomeZero {
		return 0
	}
	first := hello.FirstUnackedSequence
	if first == 0 {
		return hello.LastSequence
	}
	c := first - 1
	for {
		if _, ok := h.batches[key{sensor, c + 1}]; !ok {
			return c
		}
		c++
	}
}

// Stream implements jasper.v1.IngestService.
func (h *Hub) Stream(st grpc.BidiStreamingServer[jasperv1.StreamRequest, jasperv1.StreamResponse]) error {
	id, err := sensorID(st)
	if err != nil {
		return err
	}
	req, err := st.Recv()
	if err != nil {
		return err
	}
	hello := req.GetHello()
	if hello == nil {
		return errors.New("first message is not a hello")
	}
	h.mu.Lock()
	h.hellos = append(h.hellos, hello)
	onHello, onBatch, ct := h.OnHello, h.OnBatch, h.CommittedThrough
	h.mu.Unlock()
	if hello.SensorId != id {
		return st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Refusal{Refusal: &jasperv1.Refusal{
			Reason: jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN, Detail: fmt.Sprintf("hello names %q, certificate %q", hello.SensorId, id)}}})
	}
	if onHello != nil {
		if r := onHello(hello); r != nil {
			return st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Refusal{Refusal: r}})
		}
	}
	committed := h.committedThrough(id, hello)
	if ct != nil {
		committed = ct(hello)
	}
	if err := st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Welcome{Welcome: &jasperv1.Welcome{
		HubId: h.ID, CommittedThrough: committed, MaxBatchBytes: h.MaxBatchBytes}}}); err != nil {
		return err
	}
	for {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		b := req.GetBatch()
		if b == nil {
			return errors.New("expected a batch")
		}
		if onBatch != nil {
			r, err := onBatch(b)
			if err != nil {
				return err
			}
			if r != nil {
				if err := st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Refusal{Refusal: r}}); err != nil {
					return err
				}
				continue
			}
		}
		h.mu.Lock()
		h.received++
		k := key{id, b.Sequence}
		_, dup := h.batches[k]
		if dup {
			h.dups++
		} else {
			h.batches[k] = b
		}
		h.mu.Unlock()
		if err := st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Ack{Ack: &jasperv1.Ack{Sequence: b.Sequence, Duplicate: dup}}}); err != nil {
			return err
		}
	}
}

func sensorID(st grpc.ServerStream) (string, error) {
	p, ok := peer.FromContext(st.Context())
	if !ok {
		return "", errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return "", errors.New("no client certificate")
	}
	id, err := pki.FromCertificate(ti.State.PeerCertificates[0])
	if err != nil {
		return "", err
	}
	if id.Role != pki.RoleSensor {
		return "", fmt.Errorf("peer role %s is not sensor", id.Role)
	}
	return id.ID, nil
}
