// Package taxii is a read-only TAXII 2.1 server over the recipients' STIX
// feeds: discovery, one API root, a collection per recipient, objects and
// manifest with added_after/limit/next paging and the X-TAXII-Date-Added-
// First/Last headers, one object by id (objects/{id}/, its versions with
// match[version], default last) and its version list
// (objects/{id}/versions/), media type application/taxii+json;version=2.1.
//
// A collection holds the STIX objects of the recipient's findings and,
// once each, the objects they reference that are not theirs: the
// federation's identity (created_by_ref, where_sighted_refs) and the
// recipient's TLP marking definition (object_marking_refs), so a consumer
// (OpenCTI, MISP) resolves every reference inside the collection. Their
// date_added is their own modified (else created) time, fixed, so they
// sort before the findings and paging never moves them; a consumer that
// starts paging later fetches them by id. The objects listing returns
// every version it holds (a finding re-sent after an update adds its
// objects again) and ignores match[version]; objects/{id}/ lists each
// version once.
//
// Callers authenticate with a client certificate of the federation CA
// (verified by the TLS listener; role analyst with a country reads that
// country's CERT collection, role admin reads all) or with a bearer token
// whose SHA-256 the recipient registered. A caller sees only the
// collections it may read; any other collection id answers 404, exactly as
// one that does not exist.
package taxii

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/stix"
	"github.com/jasperfed/jasper/internal/pki"
)

// Media types.
const (
	MediaTAXII = "application/taxii+json;version=2.1"
	MediaSTIX  = "application/stix+json;version=2.1"
)

// Source is what the server reads (implemented by *outbox.Module).
type Source interface {
	Feed(recipient string, afterUs int64, limit int) ([]outbox.FeedEntry, bool)
	Recipient(id string) (directory.Recipient, bool)
	RecipientByToken(token string) string
	CERTOf(country string) string
	Directory() directory.Directory
}

// Config describes the server.
type Config struct {
	// Prefix is the path the handler is mounted at (default "/taxii2/").
	Prefix      string `yaml:"prefix"`
	Title       string `yaml:"title"`
	Description string `yaml:"description"`
	Contact     string `yaml:"contact"`
	// MaxPage caps objects per response.
	MaxPage int `yaml:"max_page"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Prefix: "/taxii2/", Title: "jasper darknet federation", Description: "Findings of the federation's darknets, per recipient.", MaxPage: 1000}
}

// Server is the TAXII handler.
type Server struct {
	cfg Config
	src Source
	log *slog.Logger
	mux *http.ServeMux
}

const apiRoot = "jasper"

// New builds the handler; mount it at cfg.Prefix.
func New(cfg Config, src Source, log *slog.Logger) (*Server, error) {
	if !strings.HasPrefix(cfg.Prefix, "/") || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, errors.New("taxii prefix: must start and end with /")
	}
	if cfg.MaxPage <= 0 {
		return nil, errors.New("taxii max_page: must be positive")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, src: src, log: log.With("component", "taxii"), mux: http.NewServeMux()}
	p := cfg.Prefix
	s.mux.HandleFunc("GET "+p+"{$}", s.discovery)
	s.mux.HandleFunc("GET "+p+apiRoot+"/{$}", s.root)
	s.mux.HandleFunc("GET "+p+apiRoot+"/collections/{$}", s.collections)
	s.mux.HandleFunc("GET "+p+apiRoot+"/collections/{id}/{$}", s.collection)
	s.mux.HandleFunc("GET "+p+apiRoot+"/collections/{id}/objects/{$}", s.objects)
	s.mux.HandleFunc("GET "+p+apiRoot+"/collections/{id}/objects/{object}/{$}", s.object)
	s.mux.HandleFunc("GET "+p+apiRoot+"/collections/{id}/objects/{object}/versions/{$}", s.versions)
	s.mux.HandleFunc("GET "+p+apiRoot+"/collections/{id}/manifest/{$}", s.manifest)
	s.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, http.StatusNotFound, "not found")
	})
	return s, nil
}

// ServeHTTP authenticates, checks the Accept header and routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "application/taxii+json") && !strings.Contains(a, "*/*") {
		s.fail(w, http.StatusNotAcceptable, "accept application/taxii+json;version=2.1")
		return
	}
	p, err := s.authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="jasper taxii"`)
		s.fail(w, http.StatusUnauthorized, err.Error())
		return
	}
	s.mux.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
}

// Principal is who is asking: the recipients whose collections it reads.
type Principal struct {
	Name       string
	All        bool
	Recipients []string
}

func (p *Principal) may(id string) bool {
	if p.All {
		return true
	}
	for _, r := range p.Recipients {
		if r == id {
			return true
		}
	}
	return false
}

var errUnauthenticated = errors.New("present a federation client certificate or a bearer token")

func (s *Server) authenticate(r *http.Request) (*Principal, error) {
	return Identify(s.src, r, "read TAXII")
}

// Recipients maps credentials to recipients: what Identify needs of the
// alerting state.
type Recipients interface {
	RecipientByToken(token string) string
	CERTOf(country string) string
}

// Identify is how both the TAXII server and the alerting admin API know who
// is asking: a recipient's bearer token (that recipient), or a federation
// client certificate verified by the TLS listener (role admin: every
// recipient; role analyst: the CERT of its country). what names the
// service in the refusal of any other role.
func Identify(src Recipients, r *http.Request, what string) (*Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, errUnauthenticated
		}
		id := src.RecipientByToken(strings.TrimSpace(tok))
		if id == "" {
			return nil, errors.New("unknown token")
		}
		return &Principal{Name: "token:" + id, Recipients: []string{id}}, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		id, err := pki.FromCertificate(r.TLS.VerifiedChains[0][0])
		if err != nil {
			return nil, err
		}
		switch id.Role {
		case pki.RoleAdmin:
			return &Principal{Name: id.String(), All: true}, nil
		case pki.RoleAnalyst:
			p := &Principal{Name: id.String()}
			if c := src.CERTOf(id.Country); c != "" {
				p.Recipients = []string{c}
			}
			return p, nil
		}
		return nil, fmt.Errorf("%s may not %s", id, what)
	}
	return nil, errUnauthenticated
}

// CollectionID is the TAXII collection id of a recipient.
func CollectionID(recipient string) string { return stix.UUID5("taxii-collection:" + recipient) }

func (s *Server) write(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("taxii_encode_failed", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"title":"internal error","http_status":"500"}`)
	}
	w.Header().Set("Content-Type", MediaTAXII)
	w.WriteHeader(status)
	w.Write(b) //nolint:errcheck // client gone
}

func (s *Server) fail(w http.ResponseWriter, status int, title string) {
	s.write(w, status, map[string]string{"title": title, "http_status": strconv.Itoa(status)})
}

func (s *Server) base(r *http.Request) string {
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host + s.cfg.Prefix
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	d := map[string]any{"title": s.cfg.Title, "description": s.cfg.Description, "default": s.base(r) + apiRoot + "/",
		"api_roots": []string{s.base(r) + apiRoot + "/"}}
	if s.cfg.Contact != "" {
		d["contact"] = s.cfg.Contact
	}
	s.write(w, http.StatusOK, d)
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	s.write(w, http.StatusOK, map[string]any{"title": s.cfg.Title, "versions": []string{MediaTAXII}, "max_content_length": 100 << 20})
}

func (s *Server) collectionInfo(rc *directory.Recipient) map[string]any {
	name := rc.Name
	if name == "" {
		name = rc.ID
	}
	return map[string]any{"id": CollectionID(rc.ID), "title": "Findings for " + name, "description": "Findings routed to recipient " + rc.ID,
		"can_read": true, "can_write": false, "media_types": []string{MediaSTIX}}
}

func (s *Server) collections(w http.ResponseWriter, r *http.Request) {
	p := principal(r.Context())
	d := s.src.Directory()
	cols := []map[string]any{}
	for i := range d.Recipients {
		if p.may(d.Recipients[i].ID) {
			cols = append(cols, s.collectionInfo(&d.Recipients[i]))
		}
	}
	s.write(w, http.StatusOK, map[string]any{"collections": cols})
}

// lookup resolves a collection id the principal may read.
func (s *Server) lookup(r *http.Request) (*directory.Recipient, bool) {
	p := principal(r.Context())
	d := s.src.Directory()
	for i := range d.Recipients {
		rc := &d.Recipients[i]
		if CollectionID(rc.ID) == r.PathValue("id") && p.may(rc.ID) {
			return rc, true
		}
	}
	return nil, false
}

func (s *Server) collection(w http.ResponseWriter, r *http.Request) {
	rc, ok := s.lookup(r)
	if !ok {
		s.fail(w, http.StatusNotFound, "no such collection")
		return
	}
	s.write(w, http.StatusOK, s.collectionInfo(rc))
}

// TimeFormat is how date_added values and the paging headers are written.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// Query is the parsed paging query of objects and manifest.
type Query struct {
	AfterUs int64
	Limit   int
	Types   map[string]bool
	IDs     map[string]bool
	// Versions is match[version] ("first", "last", "all" or timestamps),
	// nil when absent; only the object endpoint reads it (default last).
	Versions map[string]bool
	// SpecVersions is match[spec_version], nil when absent: every object
	// here is 2.1, so any other value matches nothing.
	SpecVersions map[string]bool
}

// ParseQuery reads added_after, next, limit, match[type], match[id],
// match[version], match[spec_version] (untrusted input).
func ParseQuery(q map[string][]string, maxPage int) (Query, error) {
	out := Query{Limit: min(100, maxPage)}
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	for _, k := range []string{"added_after", "next"} {
		if v := get(k); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return out, fmt.Errorf("%s: %q is not an RFC 3339 timestamp", k, v)
			}
			out.AfterUs = max(out.AfterUs, t.UnixMicro())
		}
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return out, fmt.Errorf("limit: %q is not a positive integer", v)
		}
		out.Limit = min(n, maxPage)
	}
	split := func(k string) map[string]bool {
		v := get(k)
		if v == "" {
			return nil
		}
		m := map[string]bool{}
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				m[x] = true
			}
		}
		return m
	}
	out.Types, out.IDs = split("match[type]"), split("match[id]")
	out.Versions, out.SpecVersions = split("match[version]"), split("match[spec_version]")
	for v := range out.Versions {
		if v == "first" || v == "last" || v == "all" {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return out, fmt.Errorf("match[version]: %q is not first, last, all or an RFC 3339 timestamp", v)
		}
	}
	return out, nil
}

type stamped struct {
	obj       stix.Object
	dateAdded int64
}

// version is an object's version: modified, else created (marking
// definitions), else its date_added (cyber observables have neither).
func (o stamped) version() string {
	if v, _ := o.obj["modified"].(string); v != "" {
		return v
	}
	if v, _ := o.obj["created"].(string); v != "" {
		return v
	}
	return ts(o.dateAdded)
}

// shared returns the objects a collection serves besides its findings':
// those every finding's objects reference (stix.Shared: the federation's
// identity and the recipient's TLP marking definition), each once, in
// date_added order. Their date_added is their own time (modified, else
// created), fixed: the same in every collection and on every request, so
// paging by added_after never moves or repeats them. They come before any
// finding added after that time; a consumer that starts paging later than
// them fetches them by id (objects/{id}/).
func shared(mk stix.Marking) []stamped {
	var out []stamped
	for _, o := range stix.Shared(mk) {
		st := stamped{obj: o}
		t, err := time.Parse(time.RFC3339Nano, st.version())
		if err != nil {
			panic(fmt.Sprintf("taxii: shared object %v has no time: %v", o["id"], err)) // constant data
		}
		st.dateAdded = t.UnixMicro()
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].dateAdded < out[j].dateAdded })
	return out
}

func (q *Query) match(o stix.Object) bool {
	return (q.Types == nil || q.Types[o["type"].(string)]) && (q.IDs == nil || q.IDs[o["id"].(string)]) &&
		(q.SpecVersions == nil || q.SpecVersions["2.1"])
}

// page returns the objects of one page and whether more follow: the
// shared objects merged by date_added into the objects of the findings.
func (s *Server) page(rc *directory.Recipient, q Query) ([]stamped, bool, error) {
	mk, err := stix.TLP(rc.TLP, rc.TLPVersion)
	if err != nil {
		return nil, false, err
	}
	sh := shared(mk)
	var out []stamped
	// add reports that the page is full and o, which matches, is left for
	// the next one.
	add := func(o stix.Object, da int64) bool {
		if da <= q.AfterUs || !q.match(o) {
			return false
		}
		if len(out) == q.Limit {
			return true
		}
		out = append(out, stamped{o, da})
		return false
	}
	sharedBefore := func(da int64) bool {
		for ; len(sh) > 0 && sh[0].dateAdded < da; sh = sh[1:] {
			if add(sh[0].obj, sh[0].dateAdded) {
				return true
			}
		}
		return false
	}
	after := q.AfterUs
	for {
		entries, more := s.src.Feed(rc.ID, after, q.Limit)
		for _, e := range entries {
			for j, o := range stix.Objects(e.Finding, mk) {
				da := e.DateAddedUs + int64(j)
				if sharedBefore(da) || add(o, da) {
					return out, true, nil
				}
			}
			after = e.DateAddedUs + outbox.FeedStride - 1
		}
		if !more || len(entries) == 0 {
			return out, sharedBefore(math.MaxInt64), nil
		}
	}
}

func ts(us int64) string { return time.UnixMicro(us).UTC().Format(TimeFormat) }

func (s *Server) paged(w http.ResponseWriter, r *http.Request) (*directory.Recipient, []stamped, bool, bool) {
	rc, ok := s.lookup(r)
	if !ok {
		s.fail(w, http.StatusNotFound, "no such collection")
		return nil, nil, false, false
	}
	q, err := ParseQuery(r.URL.Query(), s.cfg.MaxPage)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return nil, nil, false, false
	}
	objs, more, err := s.page(rc, q)
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err.Error())
		return nil, nil, false, false
	}
	if len(objs) > 0 {
		w.Header().Set("X-TAXII-Date-Added-First", ts(objs[0].dateAdded))
		w.Header().Set("X-TAXII-Date-Added-Last", ts(objs[len(objs)-1].dateAdded))
	}
	return rc, objs, more, true
}

func (s *Server) objects(w http.ResponseWriter, r *http.Request) {
	_, objs, more, ok := s.paged(w, r)
	if !ok {
		return
	}
	env := map[string]any{"more": more}
	list := make([]stix.Object, 0, len(objs))
	for _, o := range objs {
		list = append(list, o.obj)
	}
	if len(list) > 0 {
		env["objects"] = list
	}
	if more {
		env["next"] = ts(objs[len(objs)-1].dateAdded)
	}
	s.write(w, http.StatusOK, env)
}

func (s *Server) manifest(w http.ResponseWriter, r *http.Request) {
	_, objs, more, ok := s.paged(w, r)
	if !ok {
		return
	}
	env := map[string]any{"more": more}
	var list []map[string]any
	for _, o := range objs {
		list = append(list, map[string]any{"id": o.obj["id"], "date_added": ts(o.dateAdded), "version": o.version(), "media_type": MediaSTIX})
	}
	if len(list) > 0 {
		env["objects"] = list
	}
	if more {
		env["next"] = ts(objs[len(objs)-1].dateAdded)
	}
	s.write(w, http.StatusOK, env)
}

// objectVersions returns the versions of one object in a collection, each
// once (at the date_added it first had), in date_added order, filtered by
// match[version] (default last), added_after and limit; found says the
// collection holds the object at all. Every feed item is rendered: the
// cost is that of one full listing of the collection (bounded by the
// outbox's max_feed_per_recipient).
func (s *Server) objectVersions(w http.ResponseWriter, r *http.Request) ([]stamped, bool, bool) {
	rc, ok := s.lookup(r)
	if !ok {
		s.fail(w, http.StatusNotFound, "no such collection")
		return nil, false, false
	}
	q, err := ParseQuery(r.URL.Query(), s.cfg.MaxPage)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return nil, false, false
	}
	id := r.PathValue("object")
	all, _, err := s.page(rc, Query{Limit: math.MaxInt, IDs: map[string]bool{id: true}})
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err.Error())
		return nil, false, false
	}
	if len(all) == 0 {
		s.fail(w, http.StatusNotFound, "no such object")
		return nil, false, false
	}
	var vs []stamped
	seen := map[string]bool{}
	for _, o := range all {
		if v := o.version(); !seen[v] {
			seen[v] = true
			vs = append(vs, o)
		}
	}
	vs = selectVersions(vs, q.Versions)
	var out []stamped
	more := false
	for _, o := range vs {
		if o.dateAdded <= q.AfterUs || (q.SpecVersions != nil && !q.SpecVersions["2.1"]) {
			continue
		}
		if len(out) == q.Limit {
			more = true
			break
		}
		out = append(out, o)
	}
	if len(out) > 0 {
		w.Header().Set("X-TAXII-Date-Added-First", ts(out[0].dateAdded))
		w.Header().Set("X-TAXII-Date-Added-Last", ts(out[len(out)-1].dateAdded))
	}
	return out, more, true
}

// selectVersions applies match[version] (nil: last) to versions of one
// object.
func selectVersions(vs []stamped, want map[string]bool) []stamped {
	if want == nil {
		want = map[string]bool{"last": true}
	}
	if want["all"] {
		return vs
	}
	at := func(o stamped) time.Time {
		t, _ := time.Parse(time.RFC3339Nano, o.version())
		return t
	}
	first, last := 0, 0
	for i := range vs {
		if at(vs[i]).Before(at(vs[first])) {
			first = i
		}
		if !at(vs[i]).Before(at(vs[last])) {
			last = i
		}
	}
	var out []stamped
	for i, o := range vs {
		keep := (want["first"] && i == first) || (want["last"] && i == last)
		for v := range want {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil && t.Equal(at(o)) {
				keep = true
			}
		}
		if keep {
			out = append(out, o)
		}
	}
	return out
}

// object is TAXII 2.1 "Get an Object": the envelope of one object's
// versions, the shared identity and marking definitions included.
func (s *Server) object(w http.ResponseWriter, r *http.Request) {
	vs, more, ok := s.objectVersions(w, r)
	if !ok {
		return
	}
	env := map[string]any{"more": more}
	if len(vs) > 0 {
		list := make([]stix.Object, 0, len(vs))
		for _, o := range vs {
			list = append(list, o.obj)
		}
		env["objects"] = list
	}
	if more {
		env["next"] = ts(vs[len(vs)-1].dateAdded)
	}
	s.write(w, http.StatusOK, env)
}

// versions is TAXII 2.1 "Get Object Versions".
func (s *Server) versions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("match[version]") == "" {
		q.Set("match[version]", "all") // this endpoint lists every version
		r.URL.RawQuery = q.Encode()
	}
	vs, more, ok := s.objectVersions(w, r)
	if !ok {
		return
	}
	list := make([]string, 0, len(vs))
	for _, o := range vs {
		list = append(list, o.version())
	}
	env := map[string]any{"more": more}
	if len(list) > 0 {
		env["versions"] = list
	}
	s.write(w, http.StatusOK, env)
}
