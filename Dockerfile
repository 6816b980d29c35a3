# Rawflow worker/scheduler image: the official Airflow 3.3 image plus the Debian grid middleware that
# scripts/setup.sh installs on bare machines (xrootd client/server, gfal2 with its xrootd/http plugins).
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      xrootd-client xrootd-server xrootd-server-plugins xrootd-scitokens-plugins \
      gfal2 python3-gfal2 gfal2-plugin-xrootd gfal2-plugin-http gfal2-plugin-file davix gfal2-util-scripts \
      python3-xrootd \
 && rm -rf /var/lib/apt/lists/*
# gfal2's and XrdCl's bindings are built for Debian's CPython 3.11: link only them into Airflow's interpreter.
RUN site=$(/home/airflow/.local/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null \
           || python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && ln -sf /usr/lib/python3/dist-packages/gfal2.cpython-311-x86_64-linux-gnu.so "$site/" \
 && ln -sfn /usr/lib/python3/dist-packages/XRootD "$site/XRootD" \
 && ln -sfn /usr/lib/python3/dist-packages/pyxrootd "$site/pyxrootd"
ENV GFAL_PYTHONBIN=/usr/bin/python3

USER airflow
COPY --chown=airflow:root requirements.txt requirements.lock /opt/rawflow/
RUN pip install --no-cache-dir -r /opt/rawflow/requirements.txt -c /opt/rawflow/requirements.lock
COPY --chown=airflow:root include /opt/rawflow/include
RUN pip install --no-cache-dir --no-deps -e /opt/rawflow/include
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root config /opt/rawflow/config
ENV RAWFLOW_SITES=/opt/rawflow/config/sites.yaml
# The campaign steering files: the DAGs are in /opt/airflow/dags, so their default (the folder next to dags/,
# /opt/airflow/config/campaigns) does not exist in this image.
ENV RAWFLOW_CAMPAIGNS_DIR=/opt/rawflow/config/campaigns
