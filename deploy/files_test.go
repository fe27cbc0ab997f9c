package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
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

// composeFile is what TestCompose reads of a compose file.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		PullPolicy  string            `yaml:"pull_policy"`
		Environment map[string]string `yaml:"environment"`
	} `yaml:"services"`
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	var f composeFile
	if err := yaml.Unmarshal([]byte(read(t, path)), &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

// composePassed are the Evo variables docker-compose.yml hands to the replicas
// from the environment or .env.
var composePassed = []string{"BETTER_AUTH_URL", "DEBUG", "DB_TIMEOUT", "RATE_LIMIT_WRITES", "CHAT_RATE_LIMIT",
	"METRICS_TOKEN", "LLM_PROVIDER", "LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL", "LLM_TIMEOUT", "CHAT_MAX_STEPS", "CHAT_HISTORY"}

// TestCompose: docker-compose.yml runs the replicas as production (Better Auth
// from .env, never the dev issuer), passes the operator's settings through,
// builds the image once; docker-compose.dev.yml is the one place that turns the
// dev issuer on; the commands in their comments work as written (exec -T).
func TestCompose(t *testing.T) {
	base := readCompose(t, "../docker-compose.yml")
	example := read(t, "../.env.example")
	builds := 0
	for _, name := range []string{"evo1", "evo2"} {
		svc, ok := base.Services[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no service %s", name)
		}
		env := svc.Environment
		if env["ENVIRONMENT"] != "production" {
			t.Errorf("%s: ENVIRONMENT %q, want production", name, env["ENVIRONMENT"])
		}
		if _, ok := env["DEV_AUTH"]; ok {
			t.Errorf("%s: DEV_AUTH is set in docker-compose.yml", name)
		}
		for _, v := range composePassed {
			if env[v] != "${"+v+":-}" {
				t.Errorf("%s: %s is %q, want it passed on as ${%s:-}", name, v, env[v], v)
			}
			if !strings.Contains(example, "\n"+v+"=") {
				t.Errorf("%s is passed by docker-compose.yml but not in .env.example", v)
			}
		}
		if svc.Build != nil {
			builds++
		} else if svc.PullPolicy != "never" || svc.Image != base.Services["evo1"].Image {
			t.Errorf("%s: no build, so it must run evo1's image with pull_policy: never (image %q, pull_policy %q)", name, svc.Image, svc.PullPolicy)
		}
	}
	if builds != 1 {
		t.Errorf("docker-compose.yml builds the Evo image in %d services, want 1", builds)
	}

	dev := readCompose(t, "../docker-compose.dev.yml")
	for _, name := range []string{"evo1", "evo2"} {
		env := dev.Services[name].Environment
		want := map[string]string{"ENVIRONMENT": "development", "BETTER_AUTH_URL": "", "DEV_AUTH": "true", "HOST": "0.0.0.0"}
		for k, v := range want {
			if got, ok := env[k]; !ok || got != v {
				t.Errorf("docker-compose.dev.yml %s: %s is %q, want %q", name, k, got, v)
			}
		}
	}
	for _, path := range []string{"../docker-compose.yml", "../docker-compose.dev.yml", "../README.md"} {
		for _, m := range regexp.MustCompile(`docker compose exec [^\n]*`).FindAllString(read(t, path), -1) {
			if !strings.HasPrefix(m, "docker compose exec -T ") {
				t.Errorf("%s: %q: without -T the output ends in a carriage return (a TTY)", path, m)
			}
		}
	}
}
