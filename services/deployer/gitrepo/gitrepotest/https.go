package gitrepotest

import (
	"crypto/subtle"
	"encoding/pem"
	"log"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// HTTPSServer serves one bare repository over HTTPS.
type HTTPSServer struct {
	// RepoURL is the repository's https:// URL (no credentials in it).
	RepoURL string
	// CAFile is a PEM file with the certificate a client must trust: the
	// server's certificate is not signed by any system CA.
	CAFile string

	accounts map[string]string
	backend  http.Handler
	hook     pushHook
	refused  atomic.Int64
}

// RunHTTPS serves the bare repository at bare through git-http-backend on
// a loopback TLS listener until the test ends. Every request must carry
// HTTP basic auth for one of accounts (user → password); pushes are
// enabled in the repository's config (http.receivepack), as a forge does
// for authenticated users.
func RunHTTPS(t testing.TB, bare string, accounts map[string]string) *HTTPSServer {
	t.Helper()
	backend := httpBackend(t)
	Git(t, bare, "--git-dir", bare, "config", "http.receivepack", "true")
	root := filepath.Dir(bare)
	s := &HTTPSServer{accounts: accounts, backend: &cgi.Handler{
		Path: backend,
		Root: "/",
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
		Stderr: testWriter{t},
		Logger: log.New(testWriter{t}, "git-http-backend: ", 0),
	}}
	srv := httptest.NewUnstartedServer(s)
	// TLS handshakes a client refuses (an unknown CA) are expected here.
	srv.Config.ErrorLog = log.New(testWriter{t}, "https server: ", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.RepoURL = srv.URL + "/" + filepath.Base(bare)
	s.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// ServeHTTP checks the credentials, runs the BeforeNextPush function when a
// pack is pushed, and hands the request to git-http-backend.
func (s *HTTPSServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, password, ok := r.BasicAuth()
	want, known := s.accounts[user]
	if !ok || !known || subtle.ConstantTimeCompare([]byte(password), []byte(want)) != 1 {
		s.refused.Add(1)
		w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	// The client read the references with an earlier GET. receive-pack
	// checks the old value the client sends against the ref under its
	// lock, so what f pushes now makes the client's update stale.
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack") {
		if f := s.hook.take(); f != nil {
			f()
		}
	}
	s.backend.ServeHTTP(w, r)
}

// BeforeNextPush makes the server call f once, when the next push's pack
// arrives, before receive-pack sees it: what a person pushing between a
// client's reading the references and its sending the pack looks like.
func (s *HTTPSServer) BeforeNextPush(f func()) { s.hook.set(f) }

// Refused is how many requests the server refused for missing or bad
// credentials (the git CLI asks once without any).
func (s *HTTPSServer) Refused() int64 { return s.refused.Load() }

// AuthURL is RepoURL with user and password in it, for the git CLI of a
// person (with -c http.sslCAInfo=CAFile).
func (s *HTTPSServer) AuthURL(user string) string {
	u, err := url.Parse(s.RepoURL)
	if err != nil {
		panic(err) // RunHTTPS made it
	}
	u.User = url.UserPassword(user, s.accounts[user])
	return u.String()
}
