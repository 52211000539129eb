package ingest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/summary"
)

// answer is one response of a stream, ready now or after a commit.
type answer struct {
	seq      uint64
	rows     uint64
	received time.Time
	refusal  *jasperv1.Refusal  // refused before proposing
	fut      *store.BatchFuture // proposed
}

func refusal(seq uint64, reason jasperv1.RefusalReason, format string, args ...any) *jasperv1.Refusal {
	return &jasperv1.Refusal{Sequence: seq, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

func (s *Server) refuse(st grpc.BidiStreamingServer[jasperv1.StreamRequest, jasperv1.StreamResponse], r *jasperv1.Refusal) error {
	s.m.refusals.WithLabelValues(reasonLabel(r.Reason)).Inc()
	return st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Refusal{Refusal: r}})
}

func reasonLabel(r jasperv1.RefusalReason) string {
	switch r {
	case jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER:
		return "not_leader"
	case jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE:
		return "throttle"
	case jasperv1.RefusalReason_REFUSAL_REASON_INVALID:
		return "invalid"
	case jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN:
		return "forbidden"
	case jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME:
		return "bad_time"
	case jasperv1.RefusalReason_REFUSAL_REASON_TOO_LARGE:
		return "too_large"
	case jasperv1.RefusalReason_REFUSAL_REASON_REVOKED:
		return "revoked"
	}
	return "unspecified"
}

// notLeaderRefusal names the leader's ingest address when known.
func (s *Server) notLeaderRefusal(seq uint64, err error) *jasperv1.Refusal {
	r := refusal(seq, jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER, "this hub is not the raft leader")
	var nl *store.NotLeaderError
	if errors.As(err, &nl) {
		r.LeaderAddress = nl.LeaderIngestAddr
		if nl.LeaderID != "" {
			r.Detail = fmt.Sprintf("this hub is not the raft leader; the leader is %s", nl.LeaderID)
		}
	} else {
		_, r.LeaderAddress = s.deps.Store.LeaderIngestAddr()
	}
	r.RetryAfterMs = uint32(s.cfg.RetryAfter.Milliseconds())
	return r
}

// Stream implements IngestService.Stream.
func (s *Server) Stream(st grpc.BidiStreamingServer[jasperv1.StreamRequest, jasperv1.StreamResponse]) error {
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	id, cert, err := s.authorize(ctx, pki.RoleSensor)
	if err != nil {
		return err
	}
	s.m.streams.Inc()
	defer s.m.streams.Dec()

	req, err := st.Recv()
	if err != nil {
		return err
	}
	s.codec.take(req.GetBatch()) // a batch in place of the Hello is refused below
	hello := req.GetHello()
	if hello == nil {
		_ = s.refuse(st, refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_INVALID, "the first message of a stream must be a Hello"))
		return status.Error(codes.InvalidArgument, "the first message of a stream must be a Hello")
	}
	if r := s.checkHello(id, cert, hello); r != nil {
		s.log.Warn("hello_refused", "sensor_id", hello.SensorId, "reason", reasonLabel(r.Reason), "detail", r.Detail)
		_ = s.refuse(st, r)
		return nil
	}
	sensorID := hello.SensorId
	country := ""
	if id != nil {
		country = id.Country
	}
	if !s.deps.Store.IsLeader() {
		_ = s.refuse(st, s.notLeaderRefusal(0, nil))
		return nil
	}
	if err := st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Welcome{Welcome: &jasperv1.Welcome{
		HubId:            s.deps.Store.NodeID(),
		CommittedThrough: s.deps.Store.Watermark(sensorID),
		MaxBatchBytes:    uint32(s.cfg.MaxBatchBytes),
	}}}); err != nil {
		return err
	}
	log := s.log.With("sensor_id", sensorID)

	// The reader checks and proposes; the sender answers in order. A
	// failed proposal ends the stream.
	answers := make(chan *answer, s.cfg.MaxInFlight)
	recvErr := make(chan error, 1)
	go func() {
		defer close(answers)
		var lastProposed uint64
		for {
			req, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvErr <- err
				return
			}
			a := s.handleBatch(ctx, sensorID, country, cert, req, &lastProposed)
			select {
			case answers <- a:
			case <-ctx.Done():
				recvErr <- nil
				return
			}
			// After a transient refusal nothing more of this stream is
			// taken: a later batch committed now would hide the refused
			// one, which the sensor resends after reconnecting.
			// A revoked certificate ends the stream at once.
			if r := a.refusal; r != nil && (r.Reason == jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE || r.Reason == jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER || r.Reason == jasperv1.RefusalReason_REFUSAL_REASON_REVOKED) {
				recvErr <- nil
				return
			}
		}
	}()
	if err := s.sendAnswers(ctx, st, answers, log); err != nil {
		return err
	}
	if err := <-recvErr; err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// handleBatch checks one message and, if it passes, hands it to the
// proposer.
func (s *Server) handleBatch(ctx context.Context, sensorID, country string, cert *x509.Certificate, req *jasperv1.StreamRequest, lastProposed *uint64) *answer {
	now := s.deps.Now()
	b := req.GetBatch()
	if b == nil {
		return &answer{received: now, refusal: refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_INVALID, "expected a Batch after the Hello")}
	}
	// The batch's bytes as the sensor sent them (nil when the codec kept
	// none): proposed as they are, and their length is the batch's size.
	raw := s.codec.take(b)
	a := &answer{seq: b.Sequence, rows: uint64(len(b.GetRows().GetSrcIp())), received: now}
	// Revocation is enforced on every batch, not only at Hello, so that a
	// revocation committed through raft cuts a stream that is already open.
	if s.deps.Revocation != nil && cert != nil && s.deps.Revocation.RevokedCert(cert) {
		a.refusal = refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_REVOKED, "the certificate of %s (serial %s) is revoked", sensorID, cert.SerialNumber)
		return a
	}
	size := len(raw)
	if raw == nil {
		size = proto.Size(b)
	}
	if r := s.checkBatch(b, size, now, *lastProposed); r != nil {
		a.refusal = r
		return a
	}
	if s.deps.Store.LoadEnabled() && s.deps.Store.PendingRows()+a.rows > s.cfg.MaxPendingRows {
		a.refusal = refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE, "loader queue holds %d rows (bound %d): keep the batch spooled and retry", s.deps.Store.PendingRows(), s.cfg.MaxPendingRows)
		a.refusal.RetryAfterMs = uint32(s.cfg.RetryAfter.Milliseconds())
		return a
	}
	cb := &jasperv1.CommittedBatch{SensorId: sensorID, SensorCountry: country, Batch: b, ReceivedAtMs: now.UnixMilli()}
	if s.deps.Enricher != nil {
		cb.Enrichment = s.deps.Enricher.Enrich(b)
	}
	if ctx.Err() != nil {
		a.refusal = refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE, "stream closing")
		return a
	}
	fut, err := s.deps.Store.EnqueueBatchRaw(ctx, cb, raw, *lastProposed)
	switch {
	case err == nil:
		a.fut = fut
		*lastProposed = b.Sequence
	case errors.Is(err, store.ErrNotLeader):
		a.refusal = s.notLeaderRefusal(b.Sequence, err)
	default:
		a.refusal = refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE, "hub busy: %v", err)
		a.refusal.RetryAfterMs = uint32(s.cfg.RetryAfter.Milliseconds())
	}
	return a
}

// sendAnswers sends acks and refusals in order. After a proposal fails it
// sends that refusal and returns an error that ends the stream (the
// remaining in-flight batches are not answered; the sensor resumes from
// Welcome.committed_through).
func (s *Server) sendAnswers(ctx context.Context, st grpc.BidiStreamingServer[jasperv1.StreamRequest, jasperv1.StreamResponse], answers <-chan *answer, log interface {
	Warn(string, ...any)
}) error {
	for a := range answers {
		var failed error
		if a.refusal != nil {
			s.m.batches.WithLabelValues("refused").Inc()
			s.m.rows.WithLabelValues("refused").Add(float64(a.rows))
			if err := s.refuse(st, a.refusal); err != nil {
				failed = err
			}
			if a.refusal.Reason == jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER {
				return status.Error(codes.Unavailable, "not the raft leader: reconnect to the leader")
			}
			if failed != nil {
				return failed
			}
			continue
		}
		res, err := a.fut.Wait(ctx)
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err != nil {
			s.m.batches.WithLabelValues("refused").Inc()
			s.m.rows.WithLabelValues("refused").Add(float64(a.rows))
			var r *jasperv1.Refusal
			if errors.Is(err, store.ErrNotLeader) {
				r = s.notLeaderRefusal(a.seq, err)
			} else {
				r = refusal(a.seq, jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE, "batch not committed (%v): reconnect and resend from committed_through", err)
				r.RetryAfterMs = uint32(s.cfg.RetryAfter.Milliseconds())
			}
			log.Warn("proposal_failed", "sequence", a.seq, "err", err)
			_ = s.refuse(st, r)
			return status.Errorf(codes.Unavailable, "batch %d not committed: %v", a.seq, err)
		}
		outcome := "acked"
		if res.Duplicate {
			outcome = "duplicate"
		}
		s.m.batches.WithLabelValues(outcome).Inc()
		s.m.rows.WithLabelValues(outcome).Add(float64(a.rows))
		s.m.ackTime.Observe(time.Since(a.received).Seconds())
		if err := st.Send(&jasperv1.StreamResponse{Msg: &jasperv1.StreamResponse_Ack{Ack: &jasperv1.Ack{Sequence: a.seq, Duplicate: res.Duplicate}}}); err != nil {
			return err
		}
	}
	return nil
}

// checkHello authenticates the Hello against the certificate.
func (s *Server) checkHello(id *pki.Identity, cert *x509.Certificate, h *jasperv1.Hello) *jasperv1.Refusal {
	if h.SensorId == "" {
		return refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_INVALID, "Hello without sensor_id")
	}
	if id == nil { // insecure demo mode: the Hello's word is taken
		return nil
	}
	if h.SensorId != id.ID {
		return refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN, "Hello sensor_id %q differs from the certificate's id %q", h.SensorId, id.ID)
	}
	if s.deps.Revocation != nil && cert != nil && s.deps.Revocation.RevokedCert(cert) {
		return refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_REVOKED, "the certificate of %s (serial %s) is revoked", id.ID, cert.SerialNumber)
	}
	for _, p := range h.Prefixes {
		pp, err := netip.ParsePrefix(p)
		if err != nil {
			return refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_INVALID, "Hello prefix %q: %v", p, err)
		}
		if !id.Covers(pp) {
			return refusal(0, jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN, "prefix %s is outside the prefixes bound in the certificate of %s (%v)", pp, id.ID, id.Prefixes)
		}
	}
	return nil
}

// checkBatch applies the size (size: the encoded batch's bytes), structure
// and time checks.
func (s *Server) checkBatch(b *jasperv1.Batch, size int, now time.Time, lastProposed uint64) *jasperv1.Refusal {
	if n := size; n > s.cfg.MaxBatchBytes {
		return refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_TOO_LARGE, "batch is %d bytes, max_batch_bytes is %d", n, s.cfg.MaxBatchBytes)
	}
	if err := ValidateBatch(b); err != nil {
		return refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_INVALID, "%v", err)
	}
	if b.Sequence <= lastProposed {
		return refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_INVALID, "sequence %d not above %d, the previous batch of this stream", b.Sequence, lastProposed)
	}
	start := time.Unix(b.BinStart, 0)
	if d := start.Sub(now); d > s.cfg.MaxClockSkew {
		return refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME, "bin_start %s is %s in the future (allowed skew %s)", start.UTC().Format(time.RFC3339), d.Round(time.Second), s.cfg.MaxClockSkew)
	}
	end := start.Add(time.Duration(b.BinSeconds) * time.Second)
	if d := now.Sub(end); d > s.cfg.MaxBatchAge {
		return refusal(b.Sequence, jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME, "bin ended %s ago at %s, older than max_batch_age %s", d.Round(time.Second), end.UTC().Format(time.RFC3339), s.cfg.MaxBatchAge)
	}
	return nil
}

// ValidateBatch is the structural check of a batch from the wire: the
// summary package's checks (bin fields, equal column lengths, address
// lengths, classes, value ranges, fingerprint columns) plus a non-zero
// sequence.
func ValidateBatch(b *jasperv1.Batch) error {
	if b == nil {
		return errors.New("invalid batch: nil")
	}
	if b.Sequence == 0 {
		return errors.New("invalid batch: sequence 0 (sequences start at 1)")
	}
	return summary.ValidateBatch(b)
}
