{{header}}// Shared-library step (vars/keelBuild.groovy):
//   keelBuild()                          every image of keel.toml, in dependency order
//   keelBuild(image: 'app')              one image (and the images it is built on)
//   keelBuild(image: 'app', push: true, tags: ['registry.example/app:1.0'])
// Options: keel (path of keel; default $KEEL or 'keel'), dir (project directory).
def call(Map args = [:]) {
    String keel = args.keel ?: (env.KEEL ?: 'keel')
    String image = args.image ?: ''
    if (image && !(image ==~ /[a-z0-9][a-z0-9._-]*/)) {
        error("keelBuild: '${image}' is not an image name of keel.toml")
    }
    dir(args.dir ?: '.') {
        sh(label: "keel build ${image ?: '(all images)'}",
           script: "\"${keel}\" build ${image}".trim())
        if (args.push) {
            List<String> refs = args.tags ?: [image]
            for (String ref : refs) {
                sh(label: "keel push ${ref}", script: "\"${keel}\" push '${ref}'")
            }
        }
    }
}
