package email_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/email"
	"github.com/jasperfed/jasper/alerting/internal/smtptest"
	"github.com/jasperfed/jasper/alerting/outbox"
)

// TestPGPClearsignedBody sends a signed alert through the real SMTP
// server; the signature verifies with go-crypto and, independently, with
// gpg (when installed), and the signed text names the CSV's SHA-256.
func TestPGPClearsignedBody(t *testing.T) {
	dir := t.TempDir()
	ent, err := openpgp.NewEntity("jasper alerts", "test", "alerts@jasper.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ent.PrivateKey.Encrypt([]byte("pgp-pass")); err != nil {
		t.Fatal(err)
	}
	var priv, pub bytes.Buffer
	w, _ := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	if err := ent.SerializePrivateWithoutSigning(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, _ = armor.Encode(&pub, openpgp.PublicKeyType, nil)
	ent.Serialize(w)
	w.Close()
	keyFile := filepath.Join(dir, "alerts.asc")
	os.WriteFile(keyFile, priv.Bytes(), 0o600)

	srv := smtptest.Start(t)
	cfg := email.DefaultConfig()
	cfg.Host, cfg.Port, cfg.From = "127.0.0.1", srv.Port(), "alerts@jasper.example"
	cfg.Username, cfg.Password = srv.User, directory.Secret(srv.Password)
	cfg.PGPKeyFile = keyFile
	cfg.PGPPassphrase = "wrong"
	if _, err := email.New(cfg, srv.ClientTLS); err == nil {
		t.Fatal("wrong passphrase accepted")
	}
	cfg.PGPPassphrase = "pgp-pass"
	s, err := email.New(cfg, srv.ClientTLS)
	if err != nil {
		t.Fatal(err)
	}
	if res := s.Send(context.Background(), task()); res.Outcome != outbox.OutcomeOK {
		t.Fatalf("send: %v", res.Err)
	}
	p, err := smtptest.Parse(srv.Messages()[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := clearsign.Decode([]byte(p.Text))
	if block == nil {
		t.Fatalf("body is not clearsigned:\n%s", p.Text)
	}
	if _, err := block.VerifySignature(openpgp.EntityList{ent}, nil); err != nil {
		t.Fatalf("signature: %v", err)
	}
	sum := sha256.Sum256(p.Attachments["JSP-000042-evidence.csv"])
	if !strings.Contains(string(block.Plaintext), "SHA-256 of JSP-000042-evidence.csv: "+hex.EncodeToString(sum[:])) {
		t.Fatalf("signed text does not name the CSV hash:\n%s", block.Plaintext)
	}
	// A tampered body fails.
	bad := strings.Replace(p.Text, "198.51.100.7", "198.51.100.8", 1)
	if b2, _ := clearsign.Decode([]byte(bad)); b2 == nil {
		t.Fatal("tampered body no longer decodes")
	} else if _, err := b2.VerifySignature(openpgp.EntityList{ent}, nil); err == nil {
		t.Fatal("tampered body verified")
	}
	// Independently: GnuPG.
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		t.Skip("gpg not installed: verified with go-crypto only")
	}
	home := filepath.Join(dir, "gnupg")
	os.Mkdir(home, 0o700)
	run := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--no-tty"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(pub.Bytes(), "--import"); err != nil {
		t.Fatalf("gpg import: %v\n%s", err, out)
	}
	if out, err := run([]byte(p.Text), "--verify"); err != nil || !strings.Contains(out, "Good signature") {
		t.Fatalf("gpg verify: %v\n%s", err, out)
	}
	if out, err := run([]byte(bad), "--verify"); err == nil {
		t.Fatalf("gpg accepted a tampered body:\n%s", out)
	}
}
