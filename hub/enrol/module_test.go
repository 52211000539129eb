package enrol

import (
	"bytes"
	"errors"
	"math/big"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"google.golang.org/protobuf/proto"
)

func cmd(t *testing.T, nowMs int64, c *jasperv1.EnrolCommand) []byte {
	t.Helper()
	c.NowMs = nowMs
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func enrolCmd(t *testing.T, nowMs int64, token byte, sensor string, serial int64, notAfter int64) []byte {
	return cmd(t, nowMs, &jasperv1.EnrolCommand{Cmd: &jasperv1.EnrolCommand_Enrol{Enrol: &jasperv1.EnrolRecord{
		TokenId: bytes.Repeat([]byte{token}, 16), TokenExpiresAt: 2000, SensorId: sensor, Country: "JP",
		Prefixes: []string{"192.0.2.0/24"}, LongTermPublicKey: []byte{1},
		Cert: &jasperv1.CertRecord{Serial: big.NewInt(serial).Bytes(), NotAfter: notAfter},
	}}})
}

func TestModuleApplyTickSnapshot(t *testing.T) {
	m := NewModule()
	if _, err := m.Apply(1, enrolCmd(t, 1000_000, 1, "s1", 11, 1500)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(2, enrolCmd(t, 1000_000, 1, "s2", 12, 1500)); !errors.Is(err, ErrTokenReused) {
		t.Fatalf("reuse: %v", err)
	}
	if _, err := m.Apply(3, enrolCmd(t, 2000_000, 2, "s2", 12, 2500)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired at apply: %v", err)
	}
	if _, err := m.Apply(4, []byte{0xff, 0xff}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("garbage: %v", err)
	}
	issue := cmd(t, 1100_000, &jasperv1.EnrolCommand{Cmd: &jasperv1.EnrolCommand_Issue{Issue: &jasperv1.IssueRecord{
		SensorId: "s1", Cert: &jasperv1.CertRecord{Serial: big.NewInt(13).Bytes(), NotAfter: 2500}}}})
	if _, err := m.Apply(5, issue); err != nil {
		t.Fatal(err)
	}
	unknown := cmd(t, 1100_000, &jasperv1.EnrolCommand{Cmd: &jasperv1.EnrolCommand_Issue{Issue: &jasperv1.IssueRecord{
		SensorId: "nobody", Cert: &jasperv1.CertRecord{Serial: []byte{1}, NotAfter: 2500}}}})
	if _, err := m.Apply(6, unknown); !errors.Is(err, ErrUnknownSensor) {
		t.Fatalf("issue to unknown: %v", err)
	}
	info, ok := m.Sensor("s1")
	if !ok || info.LiveCerts != 2 || info.LastNotAfter.Unix() != 2500 {
		t.Fatalf("sensor record %+v", info)
	}

	// Re-enrolment with a new token revokes the earlier certificates.
	res, err := m.Apply(7, enrolCmd(t, 1200_000, 3, "s1", 14, 2600))
	if err != nil || !res.(EnrolResult).Reenrolled {
		t.Fatalf("re-enrol: %v %v", res, err)
	}
	if !m.Revoked("s1", big.NewInt(11)) || !m.Revoked("s1", big.NewInt(13)) || m.Revoked("s1", big.NewInt(14)) {
		t.Fatal("re-enrolment revocations wrong")
	}

	var snap bytes.Buffer
	if err := m.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	// Ticks prune what expired: token 1 (expires 2000) and serials 11, 13
	// (not after 1500, 2500) at 2550.
	m.OnTick(8, time.Unix(2550, 0))
	if _, _, used := m.Used(bytes.Repeat([]byte{1}, 16)); used || m.Revoked("s1", big.NewInt(13)) {
		t.Fatal("tick kept expired entries")
	}
	if info, _ := m.Sensor("s1"); info.LiveCerts != 1 {
		t.Fatalf("live certs after tick: %d", info.LiveCerts)
	}

	// Restore brings back the state as snapshotted, byte for byte.
	r := NewModule()
	if err := r.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := r.Snapshot(&again); err != nil {
		t.Fatal(err)
	}
	if by, index, used := r.Used(bytes.Repeat([]byte{1}, 16)); !bytes.Equal(snap.Bytes(), again.Bytes()) || !used || by != "s1" || index != 1 {
		t.Fatal("restore differs from snapshot")
	}
	// An empty snapshot resets.
	if err := r.Restore(bytes.NewReader(nil)); err != nil || len(r.Sensors()) != 0 {
		t.Fatalf("empty restore: %v, %d sensors", err, len(r.Sensors()))
	}

	// Revoking an unknown id (a certificate made by hand) records it.
	rv := cmd(t, 1300_000, &jasperv1.EnrolCommand{Cmd: &jasperv1.EnrolCommand_Revoke{Revoke: &jasperv1.RevokeRecord{SensorId: "manual"}}})
	if _, err := m.Apply(9, rv); err != nil {
		t.Fatal(err)
	}
	if !m.Revoked("manual", big.NewInt(99)) {
		t.Fatal("unknown id not revoked")
	}
}

func FuzzDecodeChallenge(f *testing.F) {
	f.Add(encodeChallenge([]byte("body"), []byte("sig")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		body, sig, err := decodeChallenge(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeChallenge(body, sig), b) {
			t.Fatalf("decode/encode round trip differs for %x", b)
		}
	})
}
