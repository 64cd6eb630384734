"""A Flask app for keel's buildpack tests: answers on $PORT."""
import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return f"hello from flask on {os.environ.get('DYNO', '?')}\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "5000")))
