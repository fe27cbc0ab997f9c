package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const templatePath = "nginx/evo.conf.template"

// templateVars are the ${VARS} the nginx template uses.
func templateVars(t *testing.T) []string {
	t.Helper()
	var vars []string
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+)\}`).FindAllStringSubmatch(read(t, templatePath), -1) {
		if !slices.Contains(vars, m[1]) {
			vars = append(vars, m[1])
		}
	}
	if len(vars) == 0 {
		t.Fatal("no ${VARS} in the template")
	}
	return vars
}

// TestDeployFilesAgree: the compose file and cluster.sh use the one nginx
// template and set all of its variables; the Dockerfile builds with the
// Makefile's build target (the one cluster.sh, and so CI, runs).
func TestDeployFilesAgree(t *testing.T) {
	compose, script := read(t, "../docker-compose.yml"), read(t, "cluster.sh")
	if !strings.Contains(compose, "./deploy/"+templatePath+":/etc/nginx/templates/evo.conf.template") {
		t.Errorf("docker-compose.yml does not mount deploy/%s into the nginx image's templates", templatePath)
	}
	if !strings.Contains(script, "deploy/nginx/evo.conf.template") {
		t.Errorf("cluster.sh does not render deploy/%s", templatePath)
	}
	for _, v := range templateVars(t) {
		if !strings.Contains(compose, "\n      "+v+": ") {
			t.Errorf("docker-compose.yml: nginx environment lacks %s", v)
		}
		if !strings.Contains(script, "${"+v+"}") {
			t.Errorf("cluster.sh does not substitute ${%s}", v)
		}
	}

	dockerfile, makefile := read(t, "../Dockerfile"), read(t, "../Makefile")
	if !regexp.MustCompile(`(?m)^\s*make build VERSION="\$\{VERSION\}" BIN=\S+`).MatchString(dockerfile) {
		t.Error("Dockerfile does not build with `make build VERSION=... BIN=...`")
	}
	want := "CGO_ENABLED=0 $(GO) build -trimpath -ldflags \"-s -w -X github.com/evotodo/evo/app.Version=$(VERSION)\" -o $(BIN) ."
	if !strings.Contains(makefile, "build:\n\t"+want+"\n") {
		t.Errorf("Makefile's build target is not\n\t%s", want)
	}
	if !strings.Contains(script, `make -s -C "$repo" build BIN=`) {
		t.Error("cluster.sh does not build with make build")
	}
}

// TestTemplateLikeNginxImage renders the template the way the nginx image's
// entrypoint does (envsubst of every variable in the container's
// environment, not only ours), checks that this is what cluster.sh's
// rendering gives, and that nginx accepts it inside an http{} block like
// the image's nginx.conf.
func TestTemplateLikeNginxImage(t *testing.T) {
	requireNginx(t)
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		nginx = "/usr/sbin/nginx"
	}
	// docker-compose.yml's values, but for the replicas' host names, which
	// nginx -t must resolve.
	ours := map[string]string{
		"NGINX_LISTEN":     "8080",
		"EVO_UPSTREAM_1":   "127.0.0.1:8000",
		"EVO_UPSTREAM_2":   "localhost:8000",
		"NGINX_ACCESS_LOG": "/dev/null",
	}
	// What else is set in the nginx:1.27-alpine container.
	image := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": "c0ffee",
		"HOME": "/root", "NGINX_VERSION": "1.27.5", "PKG_RELEASE": "1", "NJS_VERSION": "0.8.10",
		"NJS_RELEASE": "1", "DYNPKG_RELEASE": "1",
	}
	for k, v := range ours {
		image[k] = v
	}
	tmpl := read(t, templatePath)
	rendered := envsubst(tmpl, image)
	if got := envsubst(tmpl, ours); got != rendered {
		t.Fatal("the nginx image's rendering differs from cluster.sh's: the template uses a $NAME that is an environment variable of the image")
	}
	if m := regexp.MustCompile(`\$\{[A-Z0-9_]+\}`).FindString(rendered); m != "" {
		t.Fatalf("unrendered %s", m)
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "conf.d", "evo.conf"), rendered)
	write(t, filepath.Join(dir, "nginx.conf"), `
pid `+dir+`/nginx.pid;
error_log `+dir+`/error.log;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" $status';
    access_log `+dir+`/access.log main;
    client_body_temp_path `+dir+`/body;
    proxy_temp_path `+dir+`/proxy;
    fastcgi_temp_path `+dir+`/fastcgi;
    uwsgi_temp_path `+dir+`/uwsgi;
    scgi_temp_path `+dir+`/scgi;
    keepalive_timeout 65;
    include `+dir+`/conf.d/*.conf;
}
`)
	out, err := exec.Command(nginx, "-t", "-p", dir+"/", "-c", dir+"/nginx.conf", "-e", dir+"/error.log").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// envsubst is GNU envsubst with an explicit variable list: $NAME and
// ${NAME} for the names in vars, everything else as it is.
func envsubst(s string, vars map[string]string) string {
	re := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)
	return re.ReplaceAllStringFunc(s, func(m string) string {
		name := strings.Trim(m, "${}")
		if v, ok := vars[name]; ok {
			return v
		}
		return m
	})
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
